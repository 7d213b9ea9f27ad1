"""CloudWatch answered by the emulator (``--aws local``): ``PutMetricData`` kept, every other call refused.

botocore sends CloudWatch calls in one of three protocols, by version: the Query protocol (form-encoded,
boto3 1.24 and long after), JSON 1.0 (``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``) and, in
recent botocore, Smithy RPC v2 CBOR (``POST /service/GraniteServiceVersion20100801/operation/<Operation>``).
``PutMetricData`` bodies may be gzip-compressed. Each is decoded into the same request shape; the answer is
written in the protocol asked in. Calls to other services, and other CloudWatch operations, get an error in
their protocol's shape that names the emulator and the mode, with a status botocore does not retry.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "CLOUDWATCH_TARGET",
    "AwsReply",
    "MetricStore",
    "cbor_decode",
    "cbor_encode",
    "decode_request",
    "refusal",
]

CLOUDWATCH_TARGET = "GraniteServiceVersion20100801"
_QUERY_NS = "http://monitoring.amazonaws.com/doc/2010-08-01/"
_MAX_SERIES = 1000
_MAX_DECOMPRESSED = 64 * 1024 * 1024


@dataclass(frozen=True)
class AwsReply:
    """An HTTP answer to one AWS call."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Call:
    protocol: str  # query | json | cbor
    operation: str
    params: dict[str, Any]


# --- CBOR (RFC 8949), the part botocore writes and reads ---------------------------------------------------


def cbor_decode(data: bytes) -> Any:
    """Decode one CBOR data item.

    Args:
        data: the encoded item.

    Returns:
        The value (maps -> dict, arrays -> list, tag 1 -> its epoch seconds).

    Raises:
        ValueError: the data is not well-formed CBOR.
    """
    try:
        value, end = _cbor_item(data, 0)
    except (IndexError, struct.error, RecursionError):
        raise ValueError("truncated or malformed CBOR") from None
    if end != len(data):
        raise ValueError("trailing bytes after the CBOR item")
    return value


def _cbor_length(data: bytes, pos: int, info: int) -> tuple[int | None, int]:
    if info < 24:
        return info, pos
    sizes = {24: 1, 25: 2, 26: 4, 27: 8}
    if info in sizes:
        size = sizes[info]
        if pos + size > len(data):
            raise ValueError("truncated CBOR")
        return int.from_bytes(data[pos : pos + size], "big"), pos + size
    if info == 31:
        return None, pos
    raise ValueError(f"bad CBOR length {info}")


def _cbor_item(data: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise ValueError("truncated CBOR")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if major == 7:
        return _cbor_simple(data, pos, info)
    length, pos = _cbor_length(data, pos, info)
    if major == 0:
        return length, pos
    if major == 1:
        return -1 - (length or 0), pos
    if major in (2, 3):
        if length is None:
            chunks = []
            while data[pos] != 0xFF:
                chunk, pos = _cbor_item(data, pos)
                chunks.append(chunk.encode() if isinstance(chunk, str) else chunk)
            raw, pos = b"".join(chunks), pos + 1
        else:
            if pos + length > len(data):
                raise ValueError("truncated CBOR")
            raw, pos = data[pos : pos + length], pos + length
        return (raw.decode() if major == 3 else raw), pos
    if major == 4:
        items: list[Any] = []
        while (length is None and data[pos] != 0xFF) or (length is not None and len(items) < length):
            item, pos = _cbor_item(data, pos)
            items.append(item)
        return items, pos + (1 if length is None else 0)
    if major == 5:
        mapping: dict[Any, Any] = {}
        count = 0
        while (length is None and data[pos] != 0xFF) or (length is not None and count < length):
            key, pos = _cbor_item(data, pos)
            mapping[key], pos = _cbor_item(data, pos)
            count += 1
        return mapping, pos + (1 if length is None else 0)
    # major 6: a tag; epoch timestamps (tag 1) keep their number, others their content.
    return _cbor_item(data, pos)


def _cbor_simple(data: bytes, pos: int, info: int) -> tuple[Any, int]:
    simple = {20: False, 21: True, 22: None, 23: None}
    if info in simple:
        return simple[info], pos
    formats = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}
    if info in formats:
        fmt, size = formats[info]
        return struct.unpack(fmt, data[pos : pos + size])[0], pos + size
    raise ValueError(f"unsupported CBOR simple value {info}")


def cbor_encode(value: Any) -> bytes:
    """Encode maps, lists, strings, byte strings, integers, floats, booleans and None as CBOR."""

    def head(major: int, number: int) -> bytes:
        if number < 24:
            return bytes([major << 5 | number])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if number < 1 << (8 * size):
                return bytes([major << 5 | info]) + number.to_bytes(size, "big")
        raise ValueError("integer too large for CBOR")

    if value is None:
        return b"\xf6"
    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return head(3, len(raw)) + raw
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, (list, tuple)):
        return head(4, len(value)) + b"".join(cbor_encode(item) for item in value)
    if isinstance(value, Mapping):
        return head(5, len(value)) + b"".join(cbor_encode(k) + cbor_encode(v) for k, v in value.items())
    raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


# --- decoding a call ---------------------------------------------------------------------------------------


def _query_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields (``MetricData.member.1.Dimensions.member.2.Name=...``) -> the nested request shape."""
    tree: dict[str, Any] = {}
    for key, value in pairs:
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value

    def fold(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if set(node) == {"member"} and isinstance(node["member"], dict):
            members = node["member"]
            return [
                fold(members[index]) for index in sorted(members, key=lambda k: int(k) if k.isdigit() else 0)
            ]
        return {key: fold(child) for key, child in node.items()}

    folded = fold(tree)
    return folded if isinstance(folded, dict) else {}


def decode_request(headers: Mapping[str, str], path: str, body: bytes) -> _Call | None:
    """Recognise a CloudWatch call.

    Args:
        headers: the request headers, names lower-cased.
        path: the request path.
        body: the request body as received.

    Returns:
        The protocol, the operation and its parameters; None when the request is not a CloudWatch call
        in any protocol botocore speaks.

    Raises:
        ValueError: the body cannot be decoded in the protocol it claims.
    """
    if headers.get("content-encoding", "").lower() == "gzip":
        body = _gunzip(body)
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    prefix = f"/service/{CLOUDWATCH_TARGET}/operation/"
    if headers.get("smithy-protocol") == "rpc-v2-cbor" or path.startswith(prefix):
        operation = path[len(prefix) :] if path.startswith(prefix) else ""
        params = cbor_decode(body) if body else {}
        return _Call("cbor", operation, params if isinstance(params, dict) else {})
    target = headers.get("x-amz-target", "")
    if target.startswith(f"{CLOUDWATCH_TARGET}."):
        params = json.loads(body.decode() or "{}")
        return _Call("json", target.split(".", 1)[1], params if isinstance(params, dict) else {})
    if content_type == "application/x-www-form-urlencoded":
        fields = parse_qsl(body.decode(), keep_blank_values=True)
        params = _query_params(fields)
        return _Call("query", str(params.pop("Action", "")), params)
    return None


def _gunzip(body: bytes) -> bytes:
    """Decompress a gzip body, refusing one that would grow past ``_MAX_DECOMPRESSED``."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(body, _MAX_DECOMPRESSED)
    if inflater.unconsumed_tail or len(out) >= _MAX_DECOMPRESSED:
        raise ValueError(f"the decompressed body is larger than {_MAX_DECOMPRESSED} bytes")
    return out


# --- answers -----------------------------------------------------------------------------------------------


def _request_id() -> str:
    return str(uuid.uuid4())


def _success(call: _Call) -> AwsReply:
    request_id = _request_id()
    if call.protocol == "query":
        body = (
            f'<{call.operation}Response xmlns="{_QUERY_NS}"><ResponseMetadata><RequestId>{request_id}'
            f"</RequestId></ResponseMetadata></{call.operation}Response>"
        ).encode()
        return AwsReply(200, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body)
    if call.protocol == "json":
        return AwsReply(
            200, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}, b"{}"
        )
    headers = {
        "Content-Type": "application/cbor",
        "smithy-protocol": "rpc-v2-cbor",
        "x-amzn-RequestId": request_id,
    }
    return AwsReply(200, headers, cbor_encode({}))


def refusal(headers: Mapping[str, str], host: str, code: str, message: str, status: int = 400) -> AwsReply:
    """An AWS error in the shape the caller's protocol reads (CBOR, JSON or XML), with a status not retried.

    Args:
        headers: the request headers, names lower-cased.
        host: the host the call was for.
        code: the error code.
        message: the error message.
        status: the HTTP status.

    Returns:
        The answer.
    """
    request_id = _request_id()
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    base = {"x-amzn-RequestId": request_id, "x-amzn-ErrorType": code}
    if headers.get("smithy-protocol") == "rpc-v2-cbor":
        body = cbor_encode({"__type": code, "message": message})
        return AwsReply(
            status, {**base, "Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}, body
        )
    xml = content_type in ("application/x-www-form-urlencoded", "application/xml", "text/xml") or (
        host.startswith("s3.") or ".s3." in host or host.startswith("s3-")
    )
    if xml:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{_xml(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        return AwsReply(status, {**base, "Content-Type": "text/xml"}, body)
    body = json.dumps({"__type": code, "code": code, "message": message, "Message": message}).encode()
    return AwsReply(status, {**base, "Content-Type": "application/x-amz-json-1.1"}, body)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the metrics kept --------------------------------------------------------------------------------------


@dataclass
class _Series:
    namespace: str
    name: str
    dimensions: dict[str, str]
    unit: str = ""
    samples: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    last: float = 0.0
    updated: float = 0.0

    def add(self, value: float, count: float = 1.0) -> None:
        self.samples += int(count)
        self.total += value * count
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.last = value
        self.updated = time.time()

    def figures(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "dimensions": dict(self.dimensions),
            "unit": self.unit,
            "samples": self.samples,
            "sum": self.total,
            "min": self.minimum if self.samples else 0.0,
            "max": self.maximum if self.samples else 0.0,
            "last": self.last,
        }


@dataclass
class MetricStore:
    """The metrics an app put, by namespace, name and dimensions, and every call's fate.

    Thread-safe: the endpoint's connection threads add, the API reads.
    """

    calls: int = 0
    refused: int = 0
    last_refusal: str = ""
    protocols: dict[str, int] = field(default_factory=dict)
    _series: dict[str, _Series] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, host: str, headers: Mapping[str, str], path: str, body: bytes) -> AwsReply:
        """Answer one AWS call that reached the local endpoint.

        Args:
            host: the host the app connected to (``monitoring.<region>.amazonaws.com`` for CloudWatch).
            headers: the request headers, names lower-cased.
            path: the request path.
            body: the request body.

        Returns:
            Success for ``PutMetricData`` (its data kept), an error naming the emulator otherwise.
        """
        service = host.split(".", 1)[0]
        if service == "monitoring":
            try:
                call = decode_request(headers, path, body)
            except (ValueError, OSError, EOFError, zlib.error) as error:
                return self._refuse(
                    headers, host, "InvalidParameterValue", f"cannot decode the request: {error}"
                )
            if call is not None and call.operation == "PutMetricData":
                try:
                    self._put(call.params, call.protocol)
                except (KeyError, TypeError, ValueError) as error:
                    return self._refuse(headers, host, "InvalidParameterValue", f"bad PutMetricData: {error}")
                return _success(call)
            operation = call.operation if call is not None else "this call"
            what = f"CloudWatch {operation}"
        else:
            what = f"{host} (service {service})"
        return self._refuse(
            headers,
            host,
            "PanoramaEmulatorLocalMode",
            f"panorama-emulator --aws local answers only CloudWatch PutMetricData; {what} is not served and "
            "nothing left this machine (run with --aws host to reach AWS with your credentials)",
        )

    def _refuse(self, headers: Mapping[str, str], host: str, code: str, message: str) -> AwsReply:
        with self._lock:
            self.calls += 1
            self.refused += 1
            self.last_refusal = message
        return refusal(headers, host, code, message)

    def _put(self, params: Mapping[str, Any], protocol: str) -> None:
        namespace = str(params["Namespace"])
        data = params.get("MetricData") or []
        if not isinstance(data, list):
            raise ValueError("MetricData is not a list")
        points: list[tuple[_Series, list[tuple[float, float]]]] = []
        for datum in data:
            dimensions = {str(d["Name"]): str(d["Value"]) for d in datum.get("Dimensions") or []}
            series = _Series(namespace, str(datum["MetricName"]), dimensions, str(datum.get("Unit") or ""))
            points.append((series, _values(datum)))
        with self._lock:
            self.calls += 1
            self.protocols[protocol] = self.protocols.get(protocol, 0) + 1
            for fresh, values in points:
                key = _key(fresh)
                found = self._series.get(key)
                if found is None:
                    if len(self._series) >= _MAX_SERIES:
                        continue
                    found = self._series[key] = fresh
                series = found
                series.unit = fresh.unit or series.unit
                for value, count in values:
                    series.add(value, count)

    def figures(self) -> dict[str, object]:
        """``{"calls", "refused", "last_refusal", "protocols": {protocol: puts}, "series": {key: {...}}}``.

        A series' key is ``<namespace>/<name>``, followed by ``{dimension=value,...}`` when it has any.
        """
        with self._lock:
            series = {key: item.figures() for key, item in sorted(self._series.items())}
            return {
                "calls": self.calls,
                "refused": self.refused,
                "last_refusal": self.last_refusal,
                "protocols": dict(self.protocols),
                "series": series,
            }


def _key(series: _Series) -> str:
    dims = ",".join(f"{name}={value}" for name, value in sorted(series.dimensions.items()))
    return f"{series.namespace}/{series.name}" + (f"{{{dims}}}" if dims else "")


def _values(datum: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(value, count) pairs of one datum: Value, Values with Counts, or StatisticValues."""
    if datum.get("Value") is not None:
        return [(float(datum["Value"]), 1.0)]
    if datum.get("Values"):
        values = [float(value) for value in datum["Values"]]
        counts = [float(count) for count in datum.get("Counts") or [1.0] * len(values)]
        return list(zip(values, counts, strict=False))
    stats = datum.get("StatisticValues")
    if stats:
        count = float(stats["SampleCount"])
        return [(float(stats["Sum"]) / count if count else 0.0, count)]
    return []
