"""A certificate authority made for one boot, for ``--aws local``: server certificates for AWS host names.

The app's botocore trusts only this CA (``AWS_CA_BUNDLE``), so the emulator can answer its HTTPS calls to
``monitoring.<region>.amazonaws.com``. Keys are made with the ``openssl`` command, kept in a private
temporary folder outside the device's state (mode 0700) and removed when the boot ends; only the CA's
certificate, which is public, is put where the app can read it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

from emulator.errors import DeviceError

__all__ = ["LocalCA"]

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
_DAYS = "7"
_MAX_HOSTS = 256


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise DeviceError(
            "--aws local needs the openssl command to make its certificates "
            "(Debian, Ubuntu: apt-get install openssl)"
        )
    return found


class LocalCA:
    """A CA whose key lives only as long as this object; it signs a server certificate per host on demand.

    Raises:
        DeviceError: openssl is missing or failed.
    """

    def __init__(self) -> None:
        self._openssl = _openssl()
        self._dir = Path(tempfile.mkdtemp(prefix="pe-aws-ca-"))
        self._dir.chmod(0o700)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", _DAYS,
            "-subj", "/CN=panorama-emulator local AWS CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self.certificate_pem = (self._dir / "ca.pem").read_bytes()
        """The CA certificate (PEM), for the app's ``AWS_CA_BUNDLE``."""

    def _run(self, *args: str) -> None:
        try:
            done = subprocess.run(
                [self._openssl, *args], cwd=self._dir, capture_output=True, text=True, check=False, timeout=60
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise DeviceError(f"cannot run openssl for the --aws local certificates: {error}") from None
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise DeviceError(f"openssl failed making the --aws local certificates: {said}")

    def context_for(self, host: str) -> ssl.SSLContext:
        """A server TLS context with a certificate for ``host`` signed by this CA (made once per host).

        Args:
            host: a DNS name.

        Returns:
            The context.

        Raises:
            DeviceError: ``host`` is not a DNS name, or openssl failed.
        """
        if not _HOST.match(host) or len(host) > 253:
            raise DeviceError(f"not a host name: {host!r}")
        with self._lock:
            context = self._contexts.get(host)
            if context is not None:
                return context
            if len(self._contexts) >= _MAX_HOSTS:
                raise DeviceError(f"--aws local: certificates for more than {_MAX_HOSTS} hosts asked for")
            name = secrets.token_hex(8)
            ext = self._dir / f"{name}.ext"
            ext.write_text(
                f"subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            )
            self._run(
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={host}",
            )  # fmt: skip
            self._run(
                "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", _DAYS,
                "-extfile", ext.name, "-out", f"{name}.pem",
            )  # fmt: skip
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self._dir / f"{name}.pem", self._dir / f"{name}.key")
            for suffix in ("key", "csr", "ext"):
                (self._dir / f"{name}.{suffix}").unlink(missing_ok=True)
            self._contexts[host] = context
            return context

    def close(self) -> None:
        """Remove the keys."""
        shutil.rmtree(self._dir, ignore_errors=True)
