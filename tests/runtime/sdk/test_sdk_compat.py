"""The SDK runs on the base images' Python 3.8 with the standard library and numpy only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.bridge import SDK_DIR
from runtime.bridge.testing import APP_MEMFDS, BridgeLab, FakeModels, app_plan, code_node, model_plan

SDK_FILES = sorted((SDK_DIR / "panoramasdk").glob("*.py"))
ALLOWED_IMPORTS = {
    "_thread",
    "array",
    "collections",
    "contextlib",
    "json",
    "math",
    "mmap",
    "numbers",
    "numpy",
    "os",
    "socket",
    "struct",
    "sys",
    "threading",
    "weakref",
}


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "panorama-emulator"
    return Path(os.environ.get("PANORAMA_EMULATOR_CACHE") or default)


@pytest.fixture(params=["3.7", "3.8"], ids=lambda version: f"python{version}")
def old_python(request: pytest.FixtureRequest) -> tuple[str, int]:
    """A Python of the real base images (3.8; 3.7 on older ones) with numpy, as scripts/setup makes it."""
    version: str = request.param
    minor = int(version.split(".")[1])
    listed = [entry for entry in os.environ.get("PE_SDK_PYTHONS", "").split(":") if entry]
    for candidate in [*listed, str(_cache() / f"sdk-python{version}" / "bin" / "python")]:
        if not Path(candidate).is_file():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys, numpy; print(sys.version_info[1])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(minor):
            return candidate, minor
    pytest.skip(f"no Python {version} with numpy (scripts/setup makes one where the machine has it)")


def test_the_sdk_has_the_modules_it_needs() -> None:
    assert {path.name for path in SDK_FILES} >= {
        "__init__.py",
        "_protocol.py",
        "_client.py",
        "_media.py",
        "_node.py",
    }


@pytest.mark.parametrize("path", SDK_FILES, ids=lambda path: path.name)
def test_sdk_module_is_python_3_8_syntax(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Match), f"{path.name}:{node.lineno}: match needs 3.10"
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            pytest.fail(f"{path.name}: __future__ imports hide 3.9+ annotations that fail at run time")
        if isinstance(node, ast.Call) and any(keyword.arg == "strict" for keyword in node.keywords):
            pytest.fail(f"{path.name}:{node.lineno}: zip(strict=) needs 3.10")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            assert node.value.id not in {"list", "dict", "tuple", "set", "type"}, (
                f"{path.name}:{node.lineno}: builtin generics need 3.9"
            )


@pytest.mark.parametrize("path", SDK_FILES, ids=lambda path: path.name)
def test_sdk_module_imports_only_the_standard_library_and_numpy(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                continue
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        for name in names:
            assert name in ALLOWED_IMPORTS, f"{path.name} imports {name}"


def test_protocol_module_is_importable_alone_without_the_project() -> None:
    code = "import _protocol; print(_protocol.PROTOCOL_VERSION, _protocol.SANDBOX_RUN_DIR)"
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(SDK_DIR / 'panoramasdk')!r}); {code}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "/opt/panorama-emulator/run"]


def test_an_app_on_an_old_python_gets_and_puts_frames(lab: BridgeLab, old_python: tuple[str, int]) -> None:
    python, minor = old_python
    runtime = lab.runtime()
    app = lab.app(
        runtime,
        """
        import sys, panoramasdk
        node = panoramasdk.node()
        for _ in range(5):
            streams = node.inputs.video_in.get(timeout=30)
            streams[0].add_rect(0.1, 0.1, 0.2, 0.2)
            node.outputs.video_out.put(streams)
        print("RESULT %d" % sys.version_info[1])
        """,
        python=python,
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == minor
    assert runtime.frames_out == 5


def test_an_app_on_an_old_python_calls_a_model_through_its_call_buffer(
    lab: BridgeLab, old_python: tuple[str, int]
) -> None:
    python, minor = old_python
    models = FakeModels({"model_node": lambda inputs: (inputs["data"] * 2,)})
    runtime = lab.runtime(app_plan(code_node(), models=[model_plan()]), models=models)
    app = lab.app(
        runtime,
        APP_MEMFDS
        + textwrap.dedent(
            """
            import json, sys
            import numpy as np
            import panoramasdk
            node = panoramasdk.node()
            small = node.call(np.arange(3, dtype=np.float32), "model_node")
            big = node.call({"data": np.ones((500, 1000))}, "model_node")  # 4 MB each way: the buffer grows
            grown = [size >= 8000000 for size in memfds("model-io").values()]
            total = float(big[0].sum())
            print("RESULT " + json.dumps([sys.version_info[1], small[0].tolist(), total, grown]))
            """
        ),
        python=python,
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == [minor, [0.0, 2.0, 4.0], 1000000.0, [True]]
