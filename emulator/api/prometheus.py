"""The device's figures in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = ["CONTENT_TYPE", "PREFIX", "prometheus_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""HTTP Content-Type of :func:`prometheus_text`'s output."""
PREFIX = "panorama_emulator"
"""Prefix of every metric name."""

# Below these keys, the next level's keys are names (of nodes, cameras ...) and become a label.
_COLLECTIONS = {
    "cameras": "camera",
    "models": "model",
    "nodes": "node",
    "per_camera": "camera",
    "per_node": "node",
    "series": "metric",
    "streams": "stream",
}
_BAD = re.compile(r"[^a-zA-Z0-9_]")

Labels = tuple[tuple[str, str], ...]


def _name(parts: list[str]) -> str:
    name = "_".join(_BAD.sub("_", part) for part in parts if part)
    return re.sub(r"_+", "_", name).strip("_")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


Samples = dict[str, list[tuple[Labels, float]]]


def _walk(value: object, parts: list[str], labels: Labels, out: Samples) -> None:
    if isinstance(value, Mapping):
        label = _COLLECTIONS.get(parts[-1]) if parts else None
        for key, child in value.items():
            if label is not None and isinstance(child, Mapping):
                _walk(child, parts, (*labels, (label, str(key))), out)
            else:
                _walk(child, [*parts, str(key)], labels, out)
    elif isinstance(value, bool):
        out.setdefault(_name([PREFIX, *parts]), []).append((labels, 1.0 if value else 0.0))
    elif isinstance(value, (int, float)) and math.isfinite(value):
        out.setdefault(_name([PREFIX, *parts]), []).append((labels, float(value)))


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def prometheus_text(figures: Mapping[str, object]) -> str:
    """Render nested figures as Prometheus metrics.

    Numbers and booleans become samples named by their path (``panorama_emulator_<key>_<key>``); below
    ``nodes``, ``cameras``, ``models``, ``streams`` and ``series`` (the CloudWatch metrics ``--aws local``
    keeps) the keys are names and become a label instead (``panorama_emulator_nodes_fps{node="code_node"}``).
    Strings, lists and None are left out.

    Args:
        figures: the figures, as the device API's JSON metrics hold them.

    Returns:
        The exposition text, one ``# TYPE`` line per metric (gauges).
    """
    samples: Samples = {}
    _walk(figures, [], (), samples)
    lines = []
    for name in sorted(samples):
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples[name]:
            rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            lines.append(f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"
