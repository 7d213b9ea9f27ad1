"""Fixtures of the device API tests: servers over the in-package fake device (fast) and over a real one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _api_helpers import ensure_deployed

from emulator import ApplianceOptions
from emulator.api import ApplianceManager, BackgroundServer
from emulator.api.fake import FakeAppliance

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES = REPO_ROOT / "sample-apps"


@pytest.fixture
def fake_project(tmp_path: Path) -> Path:
    """A copy of the people-counter sample (unbuilt: the fake device does not run it)."""
    root = tmp_path / "people-counter"
    shutil.copytree(SAMPLES / "people-counter", root, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    return root


@pytest.fixture
def fake_manager(tmp_path: Path, fake_project: Path) -> Iterator[ApplianceManager]:
    """A device manager over the fake device, with people-counter deployed."""
    manager = ApplianceManager(
        ApplianceOptions(device="unit", state_dir=tmp_path / "state"), factory=FakeAppliance
    )
    manager.deploy_project(fake_project)
    yield manager
    manager.close()


@pytest.fixture
def fake_server(fake_manager: ApplianceManager) -> Iterator[BackgroundServer]:
    """The device API over the fake device, on a free loopback port."""
    with BackgroundServer(fake_manager) as server:
        yield server


@pytest.fixture
def fake_client(fake_server: BackgroundServer) -> Iterator[httpx.Client]:
    """An HTTP client of ``fake_server``."""
    with httpx.Client(base_url=fake_server.url, timeout=30) as client:
        yield client


# --- a real device -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def device_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The state directory of the real device the API tests share (root filesystems unpacked once)."""
    path = tmp_path_factory.mktemp("api-device")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def real_manager(device_state_dir: Path) -> Iterator[ApplianceManager]:
    """A device manager over real appliances (nothing deployed at first), closed (its device off) at the
    end of the module."""
    manager = ApplianceManager(ApplianceOptions(device="api", state_dir=device_state_dir, mode="realtime"))
    yield manager
    manager.close()


@pytest.fixture(scope="module")
def real_server(real_manager: ApplianceManager) -> Iterator[BackgroundServer]:
    """The device API over ``real_manager``, on a free loopback port."""
    with BackgroundServer(real_manager) as server:
        yield server


@pytest.fixture
def api(real_server: BackgroundServer) -> Iterator[httpx.Client]:
    """An HTTP client of ``real_server``."""
    with httpx.Client(base_url=real_server.url, timeout=120) as client:
        yield client


@pytest.fixture
def people(api: httpx.Client, people_counter_project: Path) -> httpx.Client:
    """The real device API with people-counter running."""
    ensure_deployed(api, people_counter_project)
    return api


@pytest.fixture
def boot_counter(api: httpx.Client, boot_counter_project: Path) -> httpx.Client:
    """The real device API with boot-counter running."""
    ensure_deployed(api, boot_counter_project)
    return api
