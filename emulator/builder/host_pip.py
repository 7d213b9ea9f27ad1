"""The host's pip configuration and trust store, as the stand-in base image takes them.

A package's ``RUN pip install`` must work in the image wherever the host's pip works, also behind a
TLS-intercepting proxy: the image gets the CA bundle the host's pip trusts and an ``/etc/pip.conf`` with the
host's http(s) index and proxy settings (never local paths, which mean nothing inside).
"""

from __future__ import annotations

import configparser
import contextlib
import os
from pathlib import Path

__all__ = ["HOST_CA_BUNDLE", "IMAGE_CA_BUNDLE", "host_ca_bundle", "host_pip_settings", "image_pip_conf"]

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def host_pip_settings() -> dict[str, str]:
    """The host's pip settings (config files, then PIP_* environment) that matter inside the image.

    Returns:
        Setting name (``index-url``, ``proxy``, ``cert``...) -> value.
    """
    parser = configparser.RawConfigParser()
    files = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf"), Path.home() / ".pip" / "pip.conf"]
    xdg = os.environ.get("XDG_CONFIG_HOME")
    files.append((Path(xdg) if xdg else Path.home() / ".config") / "pip" / "pip.conf")
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    with contextlib.suppress(configparser.Error):
        parser.read([str(file) for file in files])
    settings: dict[str, str] = {}
    for section in ("global", "install"):
        if parser.has_section(section):
            settings.update({key: value for key, value in parser.items(section)})
    for key in ("index-url", "extra-index-url", "trusted-host", "proxy", "cert", "timeout"):
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = value
    return settings


def image_pip_conf(settings: dict[str, str]) -> str:
    """The image's /etc/pip.conf: the CA bundle plus the network settings that make sense in a container.

    Args:
        settings: from :func:`host_pip_settings`.

    Returns:
        The file's text.
    """
    lines = ["[global]", f"cert = {IMAGE_CA_BUNDLE}"]

    def urls(value: str) -> list[str]:
        return [url for url in value.split() if url.startswith(("http://", "https://"))]

    index = urls(settings.get("index-url", ""))
    if index:
        lines.append(f"index-url = {index[0]}")
    extra = urls(settings.get("extra-index-url", ""))
    if extra:
        lines.append("extra-index-url = " + " ".join(extra))
    if settings.get("trusted-host"):
        lines.append("trusted-host = " + " ".join(settings["trusted-host"].split()))
    proxy = settings.get("proxy") or os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY")
    if proxy:
        lines.append(f"proxy = {proxy}")
    if settings.get("timeout"):
        lines.append(f"timeout = {settings['timeout']}")
    return "\n".join(lines) + "\n"


def host_ca_bundle(settings: dict[str, str]) -> bytes | None:
    """The CA bundle the host's pip trusts (its ``cert`` setting, else the system bundle).

    Args:
        settings: from :func:`host_pip_settings`.

    Returns:
        The bundle's bytes, or None when the host has none.
    """
    for candidate in (settings.get("cert"), os.environ.get("SSL_CERT_FILE"), str(HOST_CA_BUNDLE)):
        if candidate and Path(candidate).is_file():
            with contextlib.suppress(OSError):
                return Path(candidate).read_bytes()
    return None
