"""Backend environments made for real (a small one, from the pinned, hash-checked requirements of the
tensorflow environment's six), and the ``backends`` command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.backend_envs import backend_rows, install_environment
from emulator.cli import main
from emulator.errors import ModelError
from runtime.models.environment import ENVIRONMENTS, Environment


def six_only(tmp_path: Path) -> Environment:
    """An environment of one small package, pinned with its hash as the real ones are."""
    pinned = ENVIRONMENTS["tensorflow"].requirements.read_text()
    block = re.search(r"^six==.*?(?=^\S)", pinned, flags=re.M | re.S)
    assert block is not None
    requirements = tmp_path / "six.txt"
    requirements.write_text(block.group(0))
    return Environment("six", "six", "six", ("NONE",), requirements, root=tmp_path / "cache")


def test_install_twice_then_broken_then_rebuilt(tmp_path: Path) -> None:
    env = six_only(tmp_path)
    assert env.state() == "not installed"
    lines: list[str] = []
    assert install_environment(env, lines.append) == "made"
    assert env.state() == "ready" and env.version == "1.17.0"
    assert env.path.name == f"six-{env.key}" and env.path.parent == tmp_path / "cache" / "backends"
    assert any("making" in line for line in lines) and lines[-1] == f"six: ready at {env.path}"
    made = env.marker.stat().st_mtime_ns

    lines.clear()
    assert install_environment(env, lines.append) == "ready"
    assert lines == [f"six: ready at {env.path} (six 1.17.0)"]
    assert env.marker.stat().st_mtime_ns == made

    # The package gone from the venv: reported, and the venv made again.
    for found in env.path.glob("lib/python*/site-packages/six.py"):
        found.unlink()
    lines.clear()
    assert install_environment(env, lines.append) == "rebuilt"
    assert lines[0].startswith(f"six: the environment at {env.path} is broken (six is not found)")
    assert env.state() == "ready"

    # A pinned package at another version.
    metadata = next(env.path.glob("lib/python*/site-packages/six-1.17.0.dist-info/METADATA"))
    # A new file, never a write into the old one: the installer may have hard-linked it from its cache.
    text = metadata.read_text().replace("Version: 1.17.0", "Version: 1.16.0")
    metadata.unlink()
    metadata.write_text(text)
    lines.clear()
    assert install_environment(env, lines.append) == "rebuilt"
    assert lines[0].endswith("is broken (six is 1.16.0, not 1.17.0); making it again")

    # An environment whose making was cut off has no marker.
    env.marker.unlink()
    assert env.state() == "broken (it was not finished)"
    assert install_environment(env) == "rebuilt"


def test_new_pins_make_a_new_environment(tmp_path: Path) -> None:
    env = six_only(tmp_path)
    key = env.key
    env.requirements.write_text(env.requirements.read_text() + "\n")
    assert env.key != key


def test_backends_lists_where_each_runs_and_its_versions() -> None:
    rows = {row.backend: row for row in backend_rows()}
    assert rows["mxnet"].where == "environment mxnet" and rows["mxnet"].version == "mxnet 1.9.1"
    assert rows["tensorflow-graph"].where == "environment tensorflow"
    assert rows["onnxruntime"].where == "model server"
    assert rows["mxnet"].frameworks == ("MXNET",)
    assert rows["mxnet"].files == "*-symbol.json with *.params"
    assert list(rows)[:3] == ["mxnet", "tensorflow-savedmodel", "tensorflow-graph"]
    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == 0, result.output
    assert re.search(
        r"mxnet\s+MXNET\s+\*-symbol\.json with \*\.params\s+environment mxnet\s+mxnet 1\.9\.1\s+",
        result.output,
    )
    assert "opencv-tensorflow" not in result.output


def test_backends_install_refuses_an_unknown_name() -> None:
    result = CliRunner().invoke(main, ["backends", "install", "caffe"])
    assert result.exit_code == 2
    assert "'caffe' is not one of 'mxnet', 'tensorflow', 'dlr'" in result.output


def test_install_fails_with_the_installers_last_line(tmp_path: Path) -> None:
    env = six_only(tmp_path)
    env.requirements.write_text("six==1.17.0 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ModelError, match=r"failed \(status \d+\): "):
        install_environment(env)
    assert not env.path.exists()
    assert list((tmp_path / "cache" / "backends").iterdir()) == [tmp_path / "cache" / "backends" / "six.lock"]
