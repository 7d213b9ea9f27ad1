"""`dev` reads a Dockerfile as the build does: COPY paths with ARG and ENV variables, and `.dockerignore`.

A package whose Dockerfile copies its sources to ``${APP_DIR}`` and a config to ``$CONF_DIR`` (an ARG and an
ENV), and whose ``.dockerignore`` leaves a file out, is built by the real build stage and run by ``dev``: the
app sees what the image holds and not the file left out, a saved source or config restarts the node without
a rebuild, and a save of the file left out changes nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _e2e_helpers import APPS_DIR, public_tmp_dir, wait_for

from emulator.dev import DevSession

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

PACKAGE = "123456789012-DEV_LOOP-1.0"
DOCKERFILE = """FROM public.ecr.aws/panorama/panorama-application
ARG APP_DIR=/panorama
ENV CONF_DIR=${APP_DIR}/conf
COPY src ${APP_DIR}
COPY app.json $CONF_DIR/app.json
"""
SEES = """
def main():
    with open("/panorama/conf/app.json") as file:
        conf = json.load(file)
    print("dev-app: sees", json.dumps({"files": sorted(os.listdir("/panorama")), "conf": conf}), flush=True)
"""


@pytest.fixture
def project() -> Iterator[Path]:
    base = public_tmp_dir("pe-e2e-dev-context-")
    root = base / "dev-context"
    shutil.copytree(APPS_DIR / "dev-loop", root, ignore=shutil.ignore_patterns("__pycache__"))
    package = root / "packages" / PACKAGE
    (package / "Dockerfile").write_text(DOCKERFILE)
    (package / ".dockerignore").write_text("# kept out of the image\nsrc/secret.txt\n")
    (package / "app.json").write_text('{"threshold": 1}\n')
    (package / "src" / "secret.txt").write_text("not for the image\n")
    app = package / "src" / "app.py"
    app.write_text(
        app.read_text().replace("import os\n", "import json\nimport os\n").replace("\n\ndef main():\n", SEES)
    )
    yield root
    shutil.rmtree(base, ignore_errors=True)


def test_dev_overlays_what_the_build_copies(project: Path) -> None:
    lines: list[str] = []
    session = DevSession(
        project, state_dir=project.parent / "state", device="dev-context", say=lambda line: None,
        echo=lambda node, line: lines.append(line),
    )  # fmt: skip
    package = project / "packages" / PACKAGE

    def sees() -> list[dict[str, object]]:
        return [json.loads(line.split(" ", 2)[2]) for line in lines if line.startswith("dev-app: sees ")]

    def kinds() -> list[str]:
        return [event.kind for event in session.events]

    with session.start():
        wait_for(lambda: "dev-app: v1 first frame" in lines, "the first frame")
        rootfs = session.appliance.store.rootfs(
            session.appliance.plan.code_nodes[0].asset_uri, progress=False
        )
        assert sorted(path.name for path in (rootfs / "panorama").iterdir()) == ["app.py", "conf"]
        assert sees() == [{"files": ["app.py", "conf"], "conf": {"threshold": 1}}]
        app = package / "src" / "app.py"
        app.write_text(app.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
        wait_for(lambda: "dev-app: v2 first frame" in lines, "the saved source")
        (package / "app.json").write_text('{"threshold": 2}\n')
        wait_for(lambda: len(sees()) == 3, "the saved config")
        assert sees()[-1] == {"files": ["app.py", "conf"], "conf": {"threshold": 2}}
        # At least one restart per save: a save can reach the watcher as two events.
        wait_for(lambda: kinds().count("restart") >= 2, "the restart line of the config")
        assert "rebuild" not in kinds(), session.events
        (package / "src" / "secret.txt").write_text("still not for the image\n")
        wait_for(lambda: "ignored" in kinds(), "the line about the file left out")
        ignored = next(event for event in session.events if event.kind == "ignored")
        assert ignored.files == (f"{PACKAGE}/src/secret.txt",)
        restarted = [file for event in session.events if event.kind == "restart" for file in event.files]
        assert "rebuild" not in kinds() and not any("secret" in file for file in restarted), session.events
