"""``panoramasdk.node`` and its ports: what an app subclasses (or instantiates) to talk to the appliance."""

import numbers

from . import _client
from ._media import media

__all__ = ["node", "port", "ports"]

_VALUE_TYPES = ("boolean", "int32", "float32", "string")


def _typed(kind, value):
    if value is None:
        return None
    if kind == "boolean":
        return bool(value)
    if kind == "int32":
        return int(value)
    if kind == "float32":
        return float(value)
    if kind == "string":
        return str(value)
    return value


class port(object):
    """One input or output port of the node, as declared in its interface in package.json.

    Attributes:
        name: the port's name.
        type: ``media``, ``boolean``, ``int32``, ``float32`` or ``string``.
        is_input: True for an input port.
    """

    __slots__ = ("_value", "is_input", "name", "type")

    def __init__(self, name, type, is_input, value=None):
        self.name = name
        self.type = type
        self.is_input = is_input
        self._value = _typed(type, value)

    def get(self, timeout=None):
        """The port's value: a parameter (str, int, float or bool), or a list of ``media``, one per camera.

        Args:
            timeout: seconds to wait for frames (None: wait as long as it takes).

        Returns:
            The parameter's value, or the next batch of frames.

        Raises:
            TimeoutError: no frame came within ``timeout`` (a :class:`PortTimeoutError`).
            TypeError: the port is an output.
            ValueError: ``timeout`` is negative.
        """
        if not self.is_input:
            raise TypeError("{} is an output port: use put()".format(self.name))
        if self.type != "media":
            return self._value
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout != timeout:
                raise TypeError("timeout must be a number of seconds or None, found {!r}".format(timeout))
            if timeout < 0:
                raise ValueError("timeout must not be negative, found {!r}".format(timeout))
            timeout = float(timeout)
        return _client.session().get_frames(self.name, timeout)

    def put(self, data):
        """Send frames (a list of ``media``) to the port; the HDMI output shows them with their overlays.

        Args:
            data: a list or tuple of ``media`` (one ``media`` alone is accepted), or a value for a port
                that is not a media port.

        Raises:
            ValueError: ``data`` is empty or holds something that is not a ``media``.
            TypeError: the port is an input.
        """
        if self.is_input:
            raise TypeError("{} is an input port: use get()".format(self.name))
        if self.type != "media":
            _client.session().put_value(self.name, _typed(self.type, data))
            return
        if isinstance(data, media):
            data = [data]
        if not isinstance(data, (list, tuple)):
            raise ValueError(
                "{}.put() expects a list of media, found {}".format(self.name, type(data).__name__)
            )
        if not data:
            raise ValueError(
                "{}.put() needs at least one media, found an empty {}".format(self.name, type(data).__name__)
            )
        for item in data:
            if not isinstance(item, media):
                raise ValueError(
                    "{}.put() expects media objects, found {}".format(self.name, type(item).__name__)
                )
        _client.session().put_frames(self.name, data)

    def __repr__(self):
        return "<panoramasdk.port {} {} ({})>".format(
            "input" if self.is_input else "output", self.name, self.type
        )


class ports(object):
    """A node's input or output ports, reached as attributes: ``self.inputs.video_in``."""

    def __init__(self, kind, items):
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_ports", dict((item.name, item) for item in items))

    def __getattr__(self, name):
        found = self._ports.get(name)
        if found is None:
            if name.startswith("__"):
                raise AttributeError(name)
            raise AttributeError(
                "the node has no {} port {!r} (its {} ports: {})".format(
                    self._kind, name, self._kind, ", ".join(self._ports) or "none"
                )
            )
        return found

    def __getitem__(self, name):
        try:
            return self._ports[name]
        except KeyError:
            raise KeyError("the node has no {} port {!r}".format(self._kind, name)) from None

    def __setattr__(self, name, value):
        raise AttributeError("{} ports cannot be assigned".format(self._kind))

    def __contains__(self, name):
        return name in self._ports

    def __iter__(self):
        return iter(self._ports.values())

    def __len__(self):
        return len(self._ports)

    def __dir__(self):
        return [*self._ports, "get", "put"]

    def __repr__(self):
        return "<panoramasdk {} ports: {}>".format(self._kind, ", ".join(self._ports))


def _session_ports(kind):
    current = _client.session()
    found = current.port_sets.get(kind)
    if found is None:
        if kind == "inputs":
            items = [port(spec["name"], spec["type"], True, spec.get("value")) for spec in current.inputs]
        else:
            items = [port(spec["name"], spec["type"], False) for spec in current.outputs]
        found = current.port_sets.setdefault(kind, ports(kind, items))
    return found


class _PortsAttribute(object):
    """``node.inputs`` / ``node.outputs``: filled in from the appliance even when ``__init__`` never ran."""

    def __init__(self, kind):
        self.kind = kind

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        own = getattr(instance, "__dict__", {}).get(self.kind)
        if own is not None:
            return own
        return _session_ports(self.kind)

    def __set__(self, instance, value):
        instance.__dict__[self.kind] = value


class node(object):
    """The application node: subclass it (calling ``super().__init__()`` or not) or instantiate it once.

    ``self.inputs`` and ``self.outputs`` hold the ports of the node's interface; ``self.call`` runs a
    model node.

    Raises:
        RuntimeError: the process does not run on an appliance, or cannot reach it.
    """

    inputs = _PortsAttribute("inputs")
    outputs = _PortsAttribute("outputs")

    def __new__(cls, *args, **kwargs):
        instance = super(node, cls).__new__(cls)
        _client.session()
        return instance

    def call(self, inputs, name, time_out=None):
        """Run the model node ``name`` on ``inputs`` and wait for its outputs.

        Args:
            inputs: a dict ``{input name: array}``, one array (the model's first input), or a ``media``.
            name: the model node's name in the application graph.
            time_out: seconds to wait (None: as long as it takes).

        Returns:
            A tuple of numpy arrays, one per model output.

        Raises:
            KeyError: the graph has no model node ``name``.
            ValueError: the inputs are empty, hold Python objects, or exceed the call buffer's limit.
            ModelCallError: the model could not run the inputs (the model server's message, naming the node).
            TimeoutError: no answer within ``time_out`` (a :class:`PortTimeoutError`).
        """
        if isinstance(inputs, str) and not isinstance(name, str):
            inputs, name = name, inputs  # the argument order of the SDK reference text
        if time_out is not None:
            time_out = float(time_out)
            if time_out < 0:
                raise ValueError("time_out must not be negative, found {!r}".format(time_out))
        return _client.session().call(name, inputs, time_out)
