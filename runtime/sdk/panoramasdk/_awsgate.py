"""The app's side of the emulator's AWS endpoint: a port on the sandbox's loopback, carried to a unix socket.

Run as a script in front of the app's entry point (``python3 _awsgate.py SOCKET MODE -- ENTRY...``): it
listens on ``127.0.0.1`` with a port the kernel picks, points the app's AWS SDK at it, starts a forwarder
process that carries every connection to the emulator's unix socket (bound into the sandbox), and then
becomes the app (``exec``), so the app keeps its process id and its signals. The forwarder ends with the app,
in a sandbox or not: it watches a pipe whose write end only the app holds. It works the same whether the app
shares the host's network or has a namespace of its own, since only the sandbox's loopback is used.

Modes: ``host`` sets ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (botocore accepts a loopback address there);
``local`` sets ``HTTPS_PROXY`` so that AWS calls go through the emulator, which answers them itself.

Standard library only, Python 3.7 syntax: it runs on the image's Python.
"""

import contextlib
import os
import socket
import sys
import threading

__all__ = ["forward", "main"]

_CHUNK = 65536


def _pump(source, target):
    try:
        while True:
            data = source.recv(_CHUNK)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _carry(client, path):
    # An HTTP answer comes in pieces (head, body): without this, Nagle holds each piece for an ACK.
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        upstream.close()
        client.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def forward(listener, path):
    """Accept connections on ``listener`` for ever and carry each one to the unix socket ``path``.

    Args:
        listener: a listening TCP socket.
        path: the emulator's unix socket.
    """
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            continue
        threading.Thread(target=_carry, args=(client, path), daemon=True).start()


def main(argv):
    """Listen, fork the forwarder, set the app's AWS environment and exec the entry point.

    Args:
        argv: ``SOCKET MODE -- ENTRY [ARGS...]``.

    Returns:
        Only on bad arguments or a failed exec (a status for ``sys.exit``).
    """
    if len(argv) < 4 or argv[2] != "--" or argv[1] not in ("host", "local"):
        sys.stderr.write("usage: _awsgate.py SOCKET host|local -- ENTRY [ARGS...]\n")
        return 2
    path, mode, command = argv[0], argv[1], argv[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    # The app keeps the write end across exec; when it ends (however it ends) the forwarder reads EOF.
    # Outside a sandbox's pid namespace nothing else would end the forwarder.
    alive, held = os.pipe()
    if os.fork() == 0:
        try:
            os.close(held)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            threading.Thread(target=forward, args=(listener, path), daemon=True).start()
            while os.read(alive, 1):
                pass
        finally:
            os._exit(0)
    os.close(alive)
    os.set_inheritable(held, True)
    listener.close()
    if mode == "host":
        os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://127.0.0.1:%d/credentials" % port
    else:
        proxy = "http://127.0.0.1:%d" % port
        os.environ["HTTPS_PROXY"] = proxy
        os.environ["https_proxy"] = proxy
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.stderr.write("cannot start %s: %s\n" % (command[0], error.strerror))
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
