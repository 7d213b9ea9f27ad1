"""The arm64 stand-in, run through qemu-user: build it, build an app FROM an arm64 reference, boot, 3 frames.

``base-image --arch arm64`` (here ``ensure_base_image(arch="arm64")``) builds the stand-in for the device's
CPU from the cached arm64 rootfs (debootstrap runs only on a cold cache, for minutes), points the references
that name arm64 at it, and registers qemu-user with binfmt_misc (flag F) when root. A package built FROM
``1.2.1-arm64v8`` runs its RUN step through qemu-user, and its app sees ``aarch64``, as root and as an
ordinary user. A user's real arm64 base image, ``docker load``-ed from a saved copy, takes the same path:
here that image is made from the arm64 stand-in, relabelled so that it is not the stand-in, saved and loaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _e2e_helpers import APPS_DIR, public_tmp_dir
from rich.console import Console

from emulator import Appliance
from emulator.device import arch

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

REPOSITORY = "public.ecr.aws/panorama/panorama-application"
ARM64_BASE = f"{REPOSITORY}:1.2.1-arm64v8"
REAL_BASE = "pe-e2e/real-arm64-base:1.0"  # stands for a user's real image, docker load-ed
NODE = "code_node"
FRAMES = 3
_REPORT = re.compile(r"^arm64-probe (\{.*\})$", re.MULTILINE)


def write_package(root: Path, name: str, base: str) -> None:
    """``packages/123456789012-<NAME>-1.0`` FROM ``base``, with the probe app, and ``graphs/<name>``."""
    folder = root / "packages" / f"123456789012-{name.upper()}-1.0"
    (folder / "src").mkdir(parents=True)
    shutil.copy(APPS_DIR / "arm64-probe" / "app.py", folder / "src" / "app.py")
    (folder / "Dockerfile").write_text(
        f"FROM {base}\n"
        "COPY src /panorama\n"
        # A RUN step: on an x86_64 host it runs through qemu-user, found by the kernel's binfmt_misc.
        "RUN python3.8 -c \"import platform; open('/panorama/built-on', 'w').write(platform.machine())\"\n"
    )
    entry = {"path": "python3.8", "name": "/panorama/app.py"}
    descriptor = {"runtimeDescriptor": {"envelopeVersion": "2021-01-01", "entry": entry}}
    (folder / "descriptor.json").write_text(json.dumps(descriptor, indent=4))
    interface = {"name": "code_interface", "category": "business_logic", "asset": f"pe_{name}",
                 "inputs": [{"name": "video_in", "type": "media"}],
                 "outputs": [{"name": "video_out", "type": "media"}]}  # fmt: skip
    package = {
        "nodePackage": {
            "envelopeVersion": "2021-01-01",
            "name": name.upper(),
            "version": "1.0",
            "description": f"{name}: arm64 probe",
            "assets": [],
            "interfaces": [interface],
        }
    }
    (folder / "package.json").write_text(json.dumps(package, indent=4))
    graph = {"nodeGraph": {
        "envelopeVersion": "2021-01-01",
        "packages": [{"name": f"123456789012::{name.upper()}", "version": "1.0"},
                     {"name": "panorama::abstract_rtsp_media_source", "version": "1.0"},
                     {"name": "panorama::hdmi_data_sink", "version": "1.0"}],
        "nodes": [{"name": NODE, "interface": f"123456789012::{name.upper()}.code_interface",
                   "overridable": False, "launch": "onAppStart"},
                  {"name": "camera_node",
                   "interface": "panorama::abstract_rtsp_media_source.rtsp_v1_interface",
                   "overridable": True, "launch": "onAppStart"},
                  {"name": "output_node", "interface": "panorama::hdmi_data_sink.hdmi0", "overridable": True,
                   "launch": "onAppStart"}],
        "edges": [{"producer": "camera_node.video_out", "consumer": f"{NODE}.video_in"},
                  {"producer": f"{NODE}.video_out", "consumer": "output_node.video_in"}],
    }}  # fmt: skip
    (root / "graphs" / name).mkdir(parents=True)
    (root / "graphs" / name / "graph.json").write_text(json.dumps(graph, indent=4))


@dataclass
class Built:
    root: Path
    arm64_id: str
    host_id: str
    pointed: dict[str, str]  # reference -> image id, right after --arch arm64
    pointed_back: dict[str, str]  # reference -> image id, after --arch host
    architecture: str  # what the engine says the arm64 stand-in is
    outputs: dict[str, str]  # graph name -> what build-container printed


def _ids(client: object, references: tuple[str, ...]) -> dict[str, str]:
    return {ref: str(client.images.get(ref).id) for ref in references}  # type: ignore[attr-defined]


def _make_real_base(client: object, where: Path) -> None:
    """A "real" arm64 base: the arm64 stand-in relabelled as not the stand-in, saved to a file, loaded."""
    import tarfile

    import docker

    from emulator.builder.base_image import ARM64_STAND_IN, LABEL_STAND_IN

    api = client.api  # type: ignore[attr-defined]
    dockerfile = f"FROM {ARM64_STAND_IN}\nLABEL {LABEL_STAND_IN}=false\n".encode()
    context = io.BytesIO()

    with tarfile.open(fileobj=context, mode="w") as archive:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        archive.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    for _ in api.build(
        fileobj=context, custom_context=True, tag=REAL_BASE, decode=True, platform="linux/arm64",
        rm=True, forcerm=True,
    ):  # fmt: skip
        pass
    saved = where / "real-arm64-base.tar"
    with saved.open("wb") as handle:
        for chunk in client.images.get(REAL_BASE).save(named=True):  # type: ignore[attr-defined]
            handle.write(chunk)
    api.remove_image(REAL_BASE)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(REAL_BASE)  # type: ignore[attr-defined]
    with saved.open("rb") as handle:  # docker load
        client.images.load(handle.read())  # type: ignore[attr-defined]
    saved.unlink()


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    try:
        import docker

        from emulator.builder import build_container, ensure_base_image
        from emulator.builder.base_image import ARM64_REFERENCES, ARM64_STAND_IN
        from emulator.project import Project

        quiet = Console(file=io.StringIO())
        host_id = ensure_base_image(console=quiet)
        arm64_id = ensure_base_image(arch="arm64", console=quiet)
        client = docker.from_env()
    except Exception as error:  # no engine, no qemu-user-static, not root on a cold cache
        pytest.skip(f"cannot build the arm64 stand-in: {error}")
    base = public_tmp_dir("pe-e2e-arm64-")
    root = base / "arm64"
    (root / "assets").mkdir(parents=True)
    outputs: dict[str, str] = {}
    try:
        references = (*ARM64_REFERENCES, f"{REPOSITORY}:latest", f"{REPOSITORY}:1.2.0-py3.8", ARM64_STAND_IN)
        pointed = _ids(client, references)
        architecture = str(client.api.inspect_image(ARM64_STAND_IN)["Architecture"])
        for name, ref in (("stand_in", ARM64_BASE), ("real_base", REAL_BASE)):
            if ref == REAL_BASE:
                ensure_base_image(console=quiet)  # --arch host: the arm64 references go back
                pointed_back = _ids(client, references)
                _make_real_base(client, base)
            write_package(root, name, ref)
            out = io.StringIO()
            build_container(
                Project(root),
                f"pe_{name}",
                root / "packages" / f"123456789012-{name.upper()}-1.0",
                local_image=True,
                console=Console(file=out, width=400, highlight=False),
            )
            outputs[name] = out.getvalue()
        yield Built(root, arm64_id, host_id, pointed, pointed_back, architecture, outputs)
    finally:
        ensure_base_image(console=Console(file=io.StringIO()))
        for reference in (REAL_BASE, "pe_stand_in:latest", "pe_real_base:latest"):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(reference, force=True)
        client.close()
        shutil.rmtree(base, ignore_errors=True)


def _report(text: str) -> dict[str, object]:
    (found,) = _REPORT.findall(text)
    report: dict[str, object] = json.loads(found)
    return report


def test_arch_arm64_points_the_arm64_references_at_it_and_host_points_them_back(built: Built) -> None:
    from emulator.builder.base_image import ARM64_REFERENCES, ARM64_STAND_IN

    assert built.architecture == "arm64"
    assert built.arm64_id != built.host_id and built.pointed[ARM64_STAND_IN] == built.arm64_id
    for reference in ARM64_REFERENCES:
        assert built.pointed[reference] == built.arm64_id, reference
        assert built.pointed_back[reference] == built.host_id, reference
    # The names that do not say arm64 stay on the host's stand-in: the default Dockerfile runs natively.
    assert built.pointed[f"{REPOSITORY}:latest"] == built.host_id
    assert built.pointed[f"{REPOSITORY}:1.2.0-py3.8"] == built.host_id
    assert built.pointed_back[ARM64_STAND_IN] == built.arm64_id
    served = [
        line
        for line in built.outputs["stand_in"].splitlines()
        if "offline stand-in serves" in line and not line.startswith("note:")
    ]
    assert (
        len(served) == 1 and f"{ARM64_BASE} (Debian" in served[0] and "arm64 through qemu-user" in served[0]
    )


@pytest.mark.parametrize("name", ["stand_in", "real_base"])
def test_an_arm64_app_boots_and_runs_three_frames_through_qemu_as_root(built: Built, name: str) -> None:
    if arch.host_machine() == "aarch64":
        pytest.skip("the host is arm64: nothing is emulated")
    state = public_tmp_dir("pe-e2e-arm64-state-")
    try:
        appliance = Appliance(
            built.root, graph=built.root / "graphs" / name / "graph.json", device=f"arm64-{name}",
            state_dir=state, quiet=True,
        )  # fmt: skip
        with appliance:
            assert appliance.wait_for_frames(FRAMES, timeout=600)
            status = appliance.status()
            console = appliance.logs(NODE)
            metrics = appliance.metrics()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    report = _report(console)
    assert report["machine"] == "aarch64" and report["built_on"] == "aarch64"
    node = status["nodes"][NODE]  # type: ignore[index]
    assert node["arch"] == "aarch64" and node["emulated"] is True
    assert metrics["nodes"][NODE]["frames_out"] >= FRAMES  # type: ignore[index]
    assert metrics["nodes"][NODE]["restarts"] == 0  # type: ignore[index]
    if name == "real_base":
        assert "offline stand-in serves" not in built.outputs[name]


def _reachable_by(user: str, path: Path) -> bool:
    return subprocess.run(["runuser", "-u", user, "--", "test", "-r", str(path)], check=False).returncode == 0


def test_an_arm64_app_runs_through_qemu_as_an_ordinary_user(
    built: Built, test_user: pwd.struct_passwd
) -> None:
    if arch.host_machine() == "aarch64":
        pytest.skip("the host is arm64: nothing is emulated")
    cli = Path(sys.executable).with_name("panorama-emulator")
    if not _reachable_by(test_user.pw_name, Path(sys.executable)):
        pytest.skip(f"the test user cannot read {sys.executable}: make the venv readable")
    state = public_tmp_dir("pe-e2e-arm64-user-")
    try:
        os.chown(state, test_user.pw_uid, test_user.pw_gid)
        summary = state / "summary.json"
        command = [
            "runuser", "-u", test_user.pw_name, "--", str(cli), "run", "--project", str(built.root),
            "--graph", str(built.root / "graphs" / "stand_in" / "graph.json"), "--frames", str(FRAMES),
            "--device", "arm64-user", "--state-dir", str(state), "--summary-json", str(summary),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd="/tmp", timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        figures = json.loads(summary.read_text())
        logs = Path(figures["paths"]["logs"][NODE])
        console = "".join(path.read_text() for path in sorted(logs.glob("console_output*")))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert f"{NODE} ran aarch64 through qemu-user" in result.stderr
    assert figures["emulated"] == {NODE: "aarch64"}
    assert figures["nodes"][NODE]["arch"] == "aarch64" and figures["nodes"][NODE]["emulated"] is True
    assert figures["frames"] >= FRAMES and figures["restarts"] == 0
    assert _report(console)["machine"] == "aarch64"
