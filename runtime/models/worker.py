"""The model server: a separate process that loads every model node once and serves calls to them.

Started by :class:`runtime.models.host.ModelHost` as ``python -m runtime.models.worker FD`` where FD is its
end of the control socket (see :mod:`runtime.models.protocol`). Calls run on the process's main thread when
it is free, else on a pool thread, so calls from several app nodes are served concurrently (see
:mod:`runtime.models.dispatch`). A backend that is not thread-safe is called under a lock. The process exits
when the control socket closes: when the appliance closes the host, or dies.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from emulator.errors import one_line
from runtime.models.base import Backend, ModelSpec
from runtime.models.dispatch import Dispatcher
from runtime.models.protocol import SharedBuffer, receive, send
from runtime.models.remote import EnvironmentBackend
from runtime.models.serving import AppChannel, LoadedModel, answer, load_model
from runtime.models.tally import RING, Tally

__all__ = ["describe", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server on the control socket whose fd is the first argument.

    Args:
        argv: command-line arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    control = socket.socket(fileno=int(args[0]))
    # A native crash (segfault) prints the Python stacks to stderr, which the appliance keeps in its log.
    faulthandler.enable()
    # Ctrl-C in a terminal reaches the whole process group: the appliance handles it and closes the host.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = receive(control, maxfds=1)
    if received is None:
        return 0
    specs: list[ModelSpec] = received[0][1]
    nodes = Tally(len(specs), RING, fd=received[1][0])
    models: dict[str, LoadedModel] = {}
    loaded: dict[str, str] = {}
    for spec in specs:
        send(control, ("loading", spec.node))
        try:
            started = time.perf_counter()
            models[spec.node] = load_model(spec)
            loaded[spec.node] = describe(spec, models[spec.node].backend, time.perf_counter() - started)
        except BaseException as error:
            traceback.print_exc()
            send(control, ("failed", spec.node, one_line(error, named=True)))
            return 1
    ready = {
        node: (
            {name: dtype.str for name, dtype in model.dtypes.items()},
            [loaded[node], *model.backend.notes],
        )
        for node, model in models.items()
    }
    send(control, ("ready", ready))
    dispatcher = Dispatcher(functools.partial(answer, models))
    by_node = {spec.node: spec for spec in specs}
    lend = functools.partial(AppChannel, models, by_node, nodes)
    threading.Thread(target=_accept, args=(control, dispatcher, lend), name="control", daemon=True).start()
    dispatcher.loop()
    return 0


def describe(spec: ModelSpec, backend: Backend, seconds: float) -> str:
    """The boot log's line for one model node: framework, backend, where it runs, load time.

    Args:
        spec: the model node.
        backend: its loaded backend.
        seconds: how long loading (and the warm-up runs) took.

    Returns:
        e.g. ``MXNET on mxnet, environment mxnet-613dbcfdb417 (mxnet 1.9.1, numpy 1.23.5), worker pid 42,
        loaded in 1.52 s``.
    """
    if isinstance(backend, EnvironmentBackend):
        where = backend.describe()
    else:
        where = f"in the model server ({type(backend).package} {_version(type(backend).package)})"
    return f"{spec.framework} on {spec.backend}, {where}, loaded in {seconds:.2f} s"


def _version(package: str) -> str:
    return str(getattr(sys.modules.get(package), "__version__", "")) or "version unknown"


def _accept(control: socket.socket, dispatcher: Dispatcher, lend: Callable[..., AppChannel]) -> None:
    while True:
        received = receive(control, maxfds=3)
        if received is None:
            break
        message, fds = received
        sock, buffer = socket.socket(fileno=fds[0]), SharedBuffer(fds[1], int(message[1]))
        if message[0] == "app":
            tally = Tally(1, 0, fd=fds[2])
            dispatcher.add(sock, buffer, lend(tally, message[2]), closed=tally.close)
        else:
            dispatcher.add(sock, buffer)
    sys.stdout.flush()
    sys.stderr.flush()
    # The appliance is gone or closed the host. Frameworks' thread pools can make interpreter shutdown slow
    # or hang, and nothing is left to clean up.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
