"""The engine layer of the build stage: build an image, inspect it, pull it, and export a container's
filesystem as a stream, through the Docker SDK (no docker CLI).

``ImageBuilder`` is the small interface the rest of the build stage uses; ``DockerBuilder`` is the real engine
and ``emulator.builder.fake.FakeBuilder`` an in-package fake for fast tests.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from emulator.errors import BuildError, EngineError

__all__ = [
    "EXPORT_CHUNK_SIZE",
    "BuildEvent",
    "DockerBuilder",
    "EventHandler",
    "ImageBuilder",
    "ImageInfo",
    "PullError",
]

#: Bytes asked of the engine per read of an export stream.
EXPORT_CHUNK_SIZE = 1 << 20

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TAIL_LINES = 12


class PullError(BuildError):
    """A base image named by FROM could not be pulled (no registry, unknown image, no access)."""


@dataclass(frozen=True)
class BuildEvent:
    """Something the engine reported while building or pulling.

    Args:
        kind: ``step`` (a Dockerfile step starts), ``output`` (a line the step printed, or the engine's own
            bookkeeping) or ``status`` (pull progress).
        text: the line, without its newline.
        step: for ``step``: the 1-based step number.
        steps: for ``step``: how many steps the build has.
    """

    kind: str
    text: str
    step: int | None = None
    steps: int | None = None


EventHandler = Callable[[BuildEvent], None]


@dataclass(frozen=True)
class ImageInfo:
    """What the build stage needs to know about a local image.

    Args:
        id: the image id (``sha256:...``).
        architecture: as the engine reports it (``amd64``, ``arm64``...).
        size: the image's size in bytes (a good estimate of its export's size).
        has_command: whether the image has a CMD or ENTRYPOINT (``docker create`` needs one).
        labels: the image's labels (an image built FROM another inherits its labels).
    """

    id: str
    architecture: str
    size: int
    has_command: bool
    labels: Mapping[str, str] = field(default_factory=dict)


class ImageBuilder(Protocol):
    """The engine operations the build stage uses."""

    def build(self, context: Path, tag: str, *, pull: bool, on_event: EventHandler) -> str:
        """Build ``context`` (a directory with a Dockerfile) into an image tagged ``tag``.

        Args:
            context: the build context; its ``Dockerfile`` is used.
            tag: the image tag (``NAME`` means ``NAME:latest``).
            pull: always try to pull a newer base image first.
            on_event: called with every step start, output line and pull status.

        Returns:
            The built image's id.

        Raises:
            PullError: a FROM step failed.
            BuildError: another step failed (``step`` and ``log_tail`` say which and how).
            EngineError: the engine cannot be reached or refused the request.
        """
        ...

    def image(self, ref: str) -> ImageInfo | None:
        """Inspect a local image; None when the engine does not have it."""
        ...

    def pull(self, ref: str, on_event: EventHandler) -> None:
        """Pull ``ref`` from its registry; EngineError when that fails."""
        ...

    def export(self, ref: str) -> AbstractContextManager[Iterator[bytes]]:
        """Create a container from ``ref`` (never started) and stream its filesystem as an uncompressed tar.

        The container is removed when the context exits, whether or not the stream was read to its end.
        """
        ...


def _last_segment(text: str) -> str:
    """A line as a terminal would show it: what follows the last carriage return."""
    return text.rsplit("\r", 1)[-1].rstrip()


def _is_bookkeeping(line: str) -> bool:
    return line.startswith(
        (" ---> ", "Removing intermediate container", "Successfully built", "Successfully tagged")
    )


class _BuildLog:
    """Turns the engine's JSON messages into BuildEvents and remembers the current step and the last lines."""

    def __init__(self, on_event: EventHandler) -> None:
        self.on_event = on_event
        self.step: str | None = None
        self.step_keyword: str | None = None
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self.image_id: str | None = None
        self._partial = ""

    def _line(self, line: str) -> None:
        line = _last_segment(line)
        match = _STEP.match(line)
        if match:
            self.step = line
            self.step_keyword = match.group(3).split(" ", 1)[0].upper()
            self.tail.clear()
            self.on_event(BuildEvent("step", line, int(match.group(1)), int(match.group(2))))
            return
        plain = _ANSI.sub("", line)
        if not _is_bookkeeping(plain) and plain.strip():
            self.tail.append(plain)
        self.on_event(BuildEvent("output", line))

    def feed(self, message: dict[str, Any]) -> None:
        if "stream" in message:
            text = self._partial + str(message["stream"])
            *lines, self._partial = text.split("\n")
            for line in lines:
                self._line(line)
        elif "status" in message:
            status = str(message["status"])
            if message.get("id"):
                status = f"{message['id']}: {status}"
            progress = message.get("progress")
            self.on_event(BuildEvent("status", f"{status} {progress}" if progress else status))
        aux = message.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            self.image_id = str(aux["ID"])

    def flush(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def failure(self, message: str) -> BuildError:
        self.flush()
        error_class = PullError if self.step_keyword == "FROM" or self.step is None else BuildError
        return error_class(message.strip(), step=self.step, log_tail=list(self.tail))


class DockerBuilder:
    """``ImageBuilder`` on a Docker engine, through the Docker SDK.

    Args:
        client: a ``docker.DockerClient``; by default one from the environment (``DOCKER_HOST`` ...), made on
            first use.
    """

    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def api(self) -> Any:
        """The SDK's low-level ``APIClient`` (connects on first use; EngineError when no engine answers)."""
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.api.ping()
            except Exception as error:  # the SDK raises DockerException, requests or OS errors here
                self._client = None
                raise EngineError(
                    f"cannot reach the Docker engine ({error}); start dockerd or set DOCKER_HOST"
                ) from error
        return self._client.api

    def build(self, context: Path, tag: str, *, pull: bool, on_event: EventHandler) -> str:
        """See ``ImageBuilder.build``: a classic-builder build with host networking for RUN steps."""
        import docker.errors

        log = _BuildLog(on_event)
        try:
            stream = self.api.build(
                path=str(context),
                tag=tag,
                pull=pull,
                rm=True,
                forcerm=True,
                network_mode="host",
                decode=True,
                timeout=None,
            )
            for message in stream:
                if "error" in message or "errorDetail" in message:
                    detail = message.get("errorDetail") or {}
                    raise log.failure(str(message.get("error") or detail.get("message") or "build failed"))
                log.feed(message)
        except docker.errors.APIError as error:
            # The engine refused the build before any step ran: a Dockerfile syntax error, a bad context.
            raise BuildError(
                str(error.explanation or error), step=log.step, log_tail=list(log.tail)
            ) from error
        except (docker.errors.DockerException, OSError) as error:
            raise EngineError(f"the Docker engine failed during the build: {error}") from error
        log.flush()
        if log.image_id:
            return log.image_id
        info = self.image(tag)
        if info is None:
            raise BuildError("the engine reported no image at the end of the build", step=log.step)
        return info.id

    def image(self, ref: str) -> ImageInfo | None:
        """See ``ImageBuilder.image``."""
        import docker.errors

        try:
            data = self.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as error:
            if error.status_code in (400, 404):  # 400: not a valid reference, so not an image we have
                return None
            raise EngineError(f"the Docker engine cannot inspect image {ref}: {error.explanation}") from error
        except (docker.errors.DockerException, OSError) as error:
            raise EngineError(f"the Docker engine failed to inspect image {ref}: {error}") from error
        config = data.get("Config") or {}
        return ImageInfo(
            id=str(data.get("Id", "")),
            architecture=str(data.get("Architecture", "")),
            size=int(data.get("Size") or 0),
            has_command=bool(config.get("Cmd") or config.get("Entrypoint")),
            labels={str(key): str(value) for key, value in (config.get("Labels") or {}).items()},
        )

    def pull(self, ref: str, on_event: EventHandler) -> None:
        """See ``ImageBuilder.pull``."""
        import docker.errors
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(ref)
        try:
            for message in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in message:
                    raise EngineError(f"cannot pull {ref}: {message['error']}")
                if "status" in message:
                    on_event(BuildEvent("status", str(message["status"])))
        except docker.errors.APIError as error:
            raise EngineError(f"cannot pull {ref}: {error.explanation or error}") from error
        except (docker.errors.DockerException, OSError) as error:
            raise EngineError(f"cannot pull {ref}: {error}") from error

    @contextmanager
    def _export(self, ref: str) -> Iterator[Iterator[bytes]]:
        import docker.errors

        api = self.api
        info = self.image(ref)
        if info is None:
            raise EngineError(f"the Docker engine has no image {ref}")
        # `docker create` needs a command; the container is never started, so any placeholder will do.
        command = None if info.has_command else ["/nonexistent"]
        try:
            container = api.create_container(info.id, command=command)
        except docker.errors.APIError as error:
            raise EngineError(
                f"cannot create a container from {ref}: {error.explanation or error}"
            ) from error
        except (docker.errors.DockerException, OSError) as error:
            raise EngineError(f"the Docker engine failed to create a container: {error}") from error
        container_id = container["Id"]
        try:
            try:
                response = api.get(
                    f"{api.base_url}/v{api.api_version}/containers/{container_id}/export",
                    stream=True,
                    timeout=None,
                )
            except OSError as error:  # requests' connection errors
                raise EngineError(f"the Docker engine failed to start the export: {error}") from error
            try:
                if response.status_code != 200:
                    raise EngineError(
                        f"the Docker engine cannot export a container of {ref}: "
                        f"{response.status_code} {response.text.strip()}"
                    )
                yield _read_chunks(response.raw)
            finally:
                response.close()
        finally:
            # Best effort: a leftover container that never ran does no harm.
            with suppress(docker.errors.DockerException, OSError):
                api.remove_container(container_id, force=True, v=True)

    def export(self, ref: str) -> AbstractContextManager[Iterator[bytes]]:
        """See ``ImageBuilder.export``."""
        return self._export(ref)


def _read_chunks(raw: Any) -> Iterator[bytes]:
    """Chunks of an HTTP response body until its end."""
    while True:
        try:
            chunk = raw.read(EXPORT_CHUNK_SIZE)
        except Exception as error:  # urllib3 protocol / connection errors
            raise EngineError(f"the export stream from the Docker engine broke: {error}") from error
        if not chunk:
            return
        yield chunk
