"""The arm64 stand-in's parts that need neither root nor an engine: caching, tagging, binfmt, the archive.

The real build, boot and run through qemu-user are in tests/e2e/test_arm64_e2e.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from isal import igzip
from rich.console import Console
from rich.progress import Progress

from emulator.builder import base_image, base_rootfs, image_archive, qemu
from emulator.builder.base_image import (
    ARM64_REFERENCES,
    ARM64_STAND_IN,
    BASE_IMAGE_REPOSITORY,
    LABEL_STAND_IN,
    STAND_IN_REFERENCES,
    BaseImageError,
    stand_in_reference,
)
from emulator.builder.docker_build import ImageInfo
from emulator.builder.stand_in import StandInBases
from emulator.device import arch

LATEST = f"{BASE_IMAGE_REPOSITORY}:latest"


def test_the_arm64_references_are_the_ones_that_name_arm64() -> None:
    assert set(ARM64_REFERENCES) < set(STAND_IN_REFERENCES)
    assert all("arm64" in ref or "aarch64" in ref for ref in ARM64_REFERENCES)
    assert LATEST not in ARM64_REFERENCES and f"{BASE_IMAGE_REPOSITORY}:1.2.0-py3.8" not in ARM64_REFERENCES
    if arch.host_machine() == "x86_64":
        assert stand_in_reference("arm64") == ARM64_STAND_IN
    assert stand_in_reference() == LATEST
    with pytest.raises(BaseImageError, match="cannot be built for 'sparc'"):
        stand_in_reference("sparc")


def test_the_arm64_recipe_has_its_own_key_and_the_hosts_is_unchanged() -> None:
    host = base_rootfs.recipe_key()
    assert base_rootfs.recipe_key(base_rootfs.debian_arch()) == host
    assert base_rootfs.recipe_key("arm64") != base_rootfs.recipe_key("amd64")
    assert base_rootfs.elf_machine_of("arm64") == "aarch64"


def test_a_new_recipe_removes_only_its_own_architectures_tarballs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_rootfs, "debian_arch", lambda: "amd64")
    names = ["rootfs-0123456789abcdef.tar.gz", "rootfs-arm64-0123456789abcdef.tar.gz",
             "rootfs-arm64-fedcba9876543210.tar.gz", "rootfs-fedcba9876543210.tar.gz"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"")
    keep = tmp_path / "rootfs-arm64-fedcba9876543210.tar.gz"
    stale = base_rootfs._stale_tarballs(tmp_path, "arm64", keep)
    assert stale == [tmp_path / "rootfs-arm64-0123456789abcdef.tar.gz"]
    host_stale = base_rootfs._stale_tarballs(tmp_path, "amd64", tmp_path / names[3])
    assert host_stale == [tmp_path / names[0]]
    assert base_rootfs._tarball_name("arm64", "k") == "rootfs-arm64-k.tar.gz"
    assert base_rootfs._tarball_name("amd64", "k") == "rootfs-k.tar.gz"


def test_not_root_without_an_arm64_cache_names_the_arm64_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_rootfs.os, "geteuid", lambda: 1000)
    console = Console(file=io.StringIO())
    with pytest.raises(BaseImageError, match=r"sudo panorama-emulator base-image --arch arm64"):
        base_rootfs.rootfs_tarball(tmp_path, console, Progress(console=console), arch="arm64")


class _Api:
    """The two engine calls tagging makes: inspect a reference, tag an image."""

    def __init__(self, images: dict[str, dict[str, str]]) -> None:
        self.images = images  # reference -> labels
        self.tagged: list[str] = []

    def inspect_image(self, reference: str) -> dict[str, Any]:
        import docker.errors

        if reference not in self.images:
            raise docker.errors.ImageNotFound(reference)
        return {"Config": {"Labels": self.images[reference]}}

    def tag(self, image: str, repository: str, tag: str, force: bool) -> None:
        self.tagged.append(f"{repository}:{tag}")


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api


def test_tagging_leaves_a_pulled_or_loaded_image_its_name() -> None:
    real = f"{BASE_IMAGE_REPOSITORY}:1.2.1-arm64v8"
    api = _Api({real: {"org.opencontainers.image.title": "the real one"}, LATEST: {LABEL_STAND_IN: "true"}})
    left = base_image._tag_all(_Client(api), "sha256:arm64", [], native=False)  # type: ignore[arg-type]
    assert left == [real]
    assert sorted(api.tagged) == sorted(ref for ref in ARM64_REFERENCES if ref != real)
    api.tagged.clear()
    # Asked for by name (--tag), it is taken; latest is where the host's stand-in lives, always taken.
    api.images[LATEST] = {}
    left = base_image._tag_all(_Client(api), "sha256:host", [real], native=True)  # type: ignore[arg-type]
    assert left == [] and set(api.tagged) == set(STAND_IN_REFERENCES)
    out = io.StringIO()
    base_image._say_left(Console(file=out, width=300), [real])
    assert out.getvalue().count("\n") == 1 and f"left {real} as it is: not the stand-in" in out.getvalue()


def test_without_root_binfmt_registration_is_one_sentence_saying_what_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(qemu, "binfmt_handles", lambda machine: False)
    monkeypatch.setattr(qemu.os, "geteuid", lambda: 1000)
    with pytest.raises(BaseImageError) as caught:
        qemu.ensure_binfmt("aarch64")
    message = str(caught.value)
    assert "\n" not in message and "sudo apt-get install qemu-user-static" in message
    assert "sudo panorama-emulator base-image --arch arm64" in message
    assert qemu.binfmt_rule("aarch64") in message and message.endswith("/proc/sys/fs/binfmt_misc/register")


def test_as_root_without_qemu_installed_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "binfmt_handles", lambda machine: False)
    monkeypatch.setattr(qemu.os, "geteuid", lambda: 0)
    monkeypatch.setattr(qemu, "qemu_interpreter", lambda machine: None)
    with pytest.raises(BaseImageError, match="qemu-user-static is not installed"):
        qemu.ensure_binfmt("aarch64")


def test_registered_with_the_f_flag_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "binfmt_handles", lambda machine: True)
    monkeypatch.setattr(qemu.os, "geteuid", lambda: 1000)
    assert qemu.ensure_binfmt("aarch64") is False


def test_the_binfmt_rule_matches_aarch64_elf_with_the_f_flag() -> None:
    rule = qemu.binfmt_rule("aarch64", Path("/usr/bin/qemu-aarch64-static"))
    name, kind, offset, magic, mask, interpreter, flags = rule.split(":")[1:]
    assert (name, kind, offset, interpreter, flags) == (
        "qemu-aarch64", "M", "", "/usr/bin/qemu-aarch64-static", "F",
    )  # fmt: skip
    raw = magic.encode().decode("unicode_escape").encode("latin-1")  # the kernel reads \xNN escapes
    # ELF, 64-bit, little endian, e_type EXEC/DYN, e_machine 183 (aarch64)
    assert raw[:4] == b"\x7fELF" and raw[4] == 2 and int.from_bytes(raw[18:20], "little") == 183
    assert len(mask.encode().decode("unicode_escape")) == len(raw)
    with pytest.raises(BaseImageError):
        qemu.binfmt_rule("sparc64")


def test_the_loaded_archive_is_a_docker_save_of_one_arm64_layer(tmp_path: Path) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as archive:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"pe\n"))
    tarball = tmp_path / "rootfs.tar.gz"
    with igzip.open(tarball, "wb") as handle:  # type: ignore[no-untyped-call]
        handle.write(layer.getvalue())
    diff_id = image_archive.layer_diff_id(tarball)
    assert diff_id == "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps(image_archive.image_config("arm64", diff_id)).encode()
    console = Console(file=io.StringIO())
    progress = Progress(console=console)
    task = progress.add_task("x", total=None)
    stream = b"".join(image_archive._archive(tarball, "pe/x:1", config, progress, task))
    assert len(stream) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        (manifest,) = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        loaded = json.load(archive.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        assert manifest["RepoTags"] == ["pe/x:1"]
        assert archive.extractfile(manifest["Layers"][0]).read() == tarball.read_bytes()  # type: ignore[union-attr]
    assert loaded["architecture"] == "arm64" and loaded["os"] == "linux"
    assert loaded["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}


def test_the_build_names_the_arm64_stand_in_as_itself_and_says_qemu() -> None:
    if arch.host_machine() == "aarch64":
        pytest.skip("the host is arm64: nothing is emulated")
    labels = {LABEL_STAND_IN: "true", base_image.LABEL_PYTHON: "3.11.2"}
    ref = f"{BASE_IMAGE_REPOSITORY}:1.2.1-arm64v8"
    info = ImageInfo("sha256:arm", "arm64", 1, has_command=True, labels=labels)
    sentence = StandInBases({ref: info}, "sha256:host", "sha256:arm").sentence()
    assert sentence is not None and f"serves {ref} (Debian" in sentence
    assert "arm64 through qemu-user" in sentence
