"""The AWS endpoint of ``--aws host|local``: real unix socket, real forwarder process, real TLS, real HTTP.

Request bodies are what botocore writes for ``PutMetricData`` in each protocol (captured from botocore
1.27.96, the one boto3 1.24 pins, for Query, and from botocore 1.44.8 for JSON 1.0 and RPC v2 CBOR).
The sandboxed boto3 clients themselves are driven in tests/e2e/test_aws_e2e.py.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from emulator.device.aws import CA_FILE, SOCKET_FILE, AwsEndpoint, host_credentials, start_aws
from emulator.device.cloudwatch_local import MetricStore, cbor_decode, cbor_encode, decode_request
from emulator.errors import DeviceError

GATE = Path(__file__).resolve().parents[3] / "runtime" / "sdk" / "panoramasdk" / "_awsgate.py"
HOST = "monitoring.us-east-1.amazonaws.com"

QUERY_FIELDS = {
    "Action": "PutMetricData", "Version": "2010-08-01", "Namespace": "Shop",
    "MetricData.member.1.MetricName": "People", "MetricData.member.1.Value": 2.5,
    "MetricData.member.1.Unit": "Count", "MetricData.member.1.Timestamp": "2024-01-02T03:04:05Z",
    "MetricData.member.1.Dimensions.member.1.Name": "Camera",
    "MetricData.member.1.Dimensions.member.1.Value": "c1",
    "MetricData.member.2.MetricName": "Latency", "MetricData.member.2.Values.member.1": 10.0,
    "MetricData.member.2.Values.member.2": 20.0, "MetricData.member.2.Counts.member.1": 2.0,
    "MetricData.member.2.Counts.member.2": 1.0, "MetricData.member.3.MetricName": "Stats",
    "MetricData.member.3.StatisticValues.SampleCount": 4.0, "MetricData.member.3.StatisticValues.Sum": 8.0,
    "MetricData.member.3.StatisticValues.Minimum": 1.0, "MetricData.member.3.StatisticValues.Maximum": 3.0,
}  # fmt: skip
QUERY_HEADERS = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
JSON_BODY = (
    b'{"Namespace": "Shop", "MetricData": [{"MetricName": "People", "Value": 2.5, "Unit": "Count", '
    b'"Timestamp": 1704164645, "Dimensions": [{"Name": "Camera", "Value": "c1"}]}, {"MetricName": "Latency", '
    b'"Values": [10.0, 20.0], "Counts": [2.0, 1.0]}, {"MetricName": "Stats", "StatisticValues": '
    b'{"SampleCount": 4.0, "Sum": 8.0, "Minimum": 1.0, "Maximum": 3.0}}]}'
)
JSON_HEADERS = {
    "x-amz-target": "GraniteServiceVersion20100801.PutMetricData",
    "content-type": "application/x-amz-json-1.0",
    "x-amzn-query-mode": "true",
}
JSON_OTHER = {"content-type": "application/x-amz-json-1.1", "x-amz-target": "Kinesis_20131202.PutRecord"}
CBOR_BODY = bytes.fromhex(
    "a2694e616d6573706163656453686f706a4d65747269634461746183a56a4d65747269634e616d656650656f706c6565"
    "56616c7565fb400400000000000064556e697465436f756e746954696d657374616d70c11a65937d256a44696d656e73"
    "696f6e7381a2644e616d656643616d6572616556616c7565626331a36a4d65747269634e616d65674c6174656e637966"
    "56616c75657382fb4024000000000000fb403400000000000066436f756e747382fb4000000000000000fb3ff0000000"
    "000000a26a4d65747269634e616d656553746174736f53746174697374696356616c756573a46b53616d706c65436f75"
    "6e74fb40100000000000006353756dfb4020000000000000674d696e696d756dfb3ff0000000000000674d6178696d75"
    "6dfb4008000000000000"
)
CBOR_PATH = "/service/GraniteServiceVersion20100801/operation/PutMetricData"
CBOR_HEADERS = {"smithy-protocol": "rpc-v2-cbor", "content-type": "application/cbor"}


def _query_body() -> bytes:
    return urlencode(QUERY_FIELDS).encode()


def _expect_shop(figures: dict[str, object], puts: int = 1) -> None:
    series = figures["series"]
    assert isinstance(series, dict)
    assert set(series) == {"Shop/People{Camera=c1}", "Shop/Latency", "Shop/Stats"}
    people = series["Shop/People{Camera=c1}"]
    assert (people["samples"], people["last"], people["unit"]) == (puts, 2.5, "Count")
    assert people["dimensions"] == {"Camera": "c1"}
    assert (series["Shop/Latency"]["samples"], series["Shop/Latency"]["sum"]) == (3 * puts, 40.0 * puts)
    assert (series["Shop/Stats"]["samples"], series["Shop/Stats"]["sum"]) == (4 * puts, 8.0 * puts)


@pytest.mark.parametrize(
    ("protocol", "headers", "path", "body"),
    [
        ("query", QUERY_HEADERS, "/", _query_body()),
        ("json", JSON_HEADERS, "/", JSON_BODY),
        ("cbor", CBOR_HEADERS, CBOR_PATH, CBOR_BODY),
    ],
)
def test_put_metric_data_in_every_protocol_botocore_speaks_is_kept(
    protocol: str, headers: dict[str, str], path: str, body: bytes
) -> None:
    store = MetricStore()
    reply = store.answer(HOST, headers, path, body)
    assert reply.status == 200
    if protocol == "query":
        assert b"<PutMetricDataResponse" in reply.body
    elif protocol == "json":
        assert json.loads(reply.body) == {}
    else:
        assert reply.headers["smithy-protocol"] == "rpc-v2-cbor" and cbor_decode(reply.body) == {}
    # Compressed as botocore compresses large PutMetricData bodies.
    gzipped = store.answer(HOST, {**headers, "content-encoding": "gzip"}, path, gzip.compress(body))
    assert gzipped.status == 200
    figures = store.figures()
    _expect_shop(figures, puts=2)
    assert figures["protocols"] == {protocol: 2}
    assert (figures["calls"], figures["refused"]) == (2, 0)


def test_cbor_round_trip_and_botocore_timestamp_tag() -> None:
    value = {"a": [1, -2, 2.5, "x", b"\x00", True, None], "n": {"deep": 2**40}}
    assert cbor_decode(cbor_encode(value)) == value
    call = decode_request(CBOR_HEADERS, CBOR_PATH, CBOR_BODY)
    assert call is not None and call.operation == "PutMetricData"
    assert call.params["MetricData"][0]["Timestamp"] == 1704164645  # tag 1 keeps its epoch seconds
    with pytest.raises(ValueError, match="truncated"):
        cbor_decode(CBOR_BODY[:-3])


@pytest.mark.parametrize(
    ("headers", "host", "reads"),
    [
        (QUERY_HEADERS, HOST, "xml"),
        (JSON_OTHER, "kinesis.us-east-1.amazonaws.com", "json"),
        (CBOR_HEADERS, HOST, "cbor"),
        ({}, "s3.amazonaws.com", "xml"),
    ],
)  # fmt: skip
def test_other_calls_get_an_error_in_their_protocol_naming_the_emulator(
    headers: dict[str, str], host: str, reads: str
) -> None:
    store = MetricStore()
    body = urlencode({"Action": "ListMetrics"}).encode() if headers is QUERY_HEADERS else b""
    path = CBOR_PATH.replace("PutMetricData", "GetMetricData") if reads == "cbor" else "/"
    reply = store.answer(host, headers, path, body)
    assert reply.status == 400  # a client error: botocore does not retry it
    if reads == "xml":
        assert b"<Code>PanoramaEmulatorLocalMode</Code>" in reply.body
        text = reply.body.decode()
    elif reads == "json":
        text = json.loads(reply.body)["message"]
        assert json.loads(reply.body)["__type"] == "PanoramaEmulatorLocalMode"
    else:
        decoded = cbor_decode(reply.body)
        assert decoded["__type"] == "PanoramaEmulatorLocalMode"
        text = decoded["message"]
    assert "panorama-emulator --aws local" in text and "nothing left this machine" in text
    assert store.figures()["refused"] == 1


def _run_behind_gate(socket_path: Path, mode: str, code: str, env: dict[str, str]) -> str:
    """Run ``code`` on this Python behind the real forwarder, as an app's entry point would be."""
    command = [sys.executable, str(GATE), str(socket_path), mode, "--", sys.executable, "-c", code]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def local_endpoint(run_dir: Path) -> Iterator[AwsEndpoint]:
    endpoint = start_aws("local", run_dir, network="none")
    assert endpoint is not None
    yield endpoint
    endpoint.close()


CLIENT = textwrap.dedent(
    """
    import http.client, os, ssl, sys, urllib.parse
    proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
    assert proxy.hostname == "127.0.0.1", proxy
    context = ssl.create_default_context(cafile=sys.argv[1])
    def call(host, body, headers):
        connection = http.client.HTTPSConnection(proxy.hostname, proxy.port, context=context, timeout=60)
        connection.set_tunnel(host, 443)
        try:
            connection.request("POST", "/", body=body, headers=headers)
        except OSError as error:
            return "refused: %s" % error
        response = connection.getresponse()
        return "%d %s" % (response.status, response.read().decode())
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    print(call("monitoring.eu-west-1.amazonaws.com", sys.argv[2], form))
    print(call("sts.amazonaws.com", "Action=GetCallerIdentity", form))
    print(call("example.com", "", {}))
    """
)


def test_local_mode_answers_through_the_forwarder_with_a_trusted_certificate(
    local_endpoint: AwsEndpoint, run_dir: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", **local_endpoint.app_env()}
    assert env["AWS_CA_BUNDLE"] == f"/opt/panorama-emulator/run/{CA_FILE}"
    assert env["AWS_REGION"] == "us-east-1" and env["AWS_ACCESS_KEY_ID"]
    code = CLIENT + "\n"
    out = _run_behind_gate(
        run_dir / SOCKET_FILE, "local", code.replace("sys.argv[1]", repr(str(run_dir / CA_FILE)))
        .replace("sys.argv[2]", repr(_query_body().decode())), env,
    )  # fmt: skip
    put, sts, other = out.strip().splitlines()
    assert put.startswith("200 <PutMetricDataResponse")
    assert sts.startswith("400 ") and "PanoramaEmulatorLocalMode" in sts and "sts.amazonaws.com" in sts
    # The app has no network (--network none): the proxy carries nothing else.
    assert other.startswith("refused:") and "403" in other
    _expect_shop(local_endpoint.store.figures())  # type: ignore[arg-type]
    assert local_endpoint.figures()["mode"] == "local"


def test_host_mode_serves_the_callers_credentials_to_the_token_holder_only(run_dir: Path) -> None:
    secret = "fake-secret-0123456789"
    caller = {
        "AWS_ACCESS_KEY_ID": "AKIAEMULATORTEST",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "eu-west-2",
    }
    endpoint = start_aws("host", run_dir, environ=caller)
    assert endpoint is not None
    try:
        env = {"PATH": "/usr/bin:/bin", **endpoint.app_env()}
        assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-2"
        assert secret not in json.dumps(env) and "AWS_SECRET_ACCESS_KEY" not in env
        code = textwrap.dedent(
            """
            import json, os, urllib.request, urllib.error
            url = os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
            assert url.startswith("http://127.0.0.1:"), url
            token = os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": token})) as r:
                print(json.dumps(json.load(r)))
            try:
                urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "guess"}))
            except urllib.error.HTTPError as error:
                print(error.code)
            """
        )
        out = _run_behind_gate(run_dir / SOCKET_FILE, "host", code, env).strip().splitlines()
        served = json.loads(out[0])
        assert served["AccessKeyId"] == "AKIAEMULATORTEST" and served["SecretAccessKey"] == secret
        assert served["Token"] == "" and served["Expiration"].endswith("Z")
        assert out[1] == "403"
        for path in run_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes()
        assert "fake-secret" not in repr(endpoint.credentials())
    finally:
        endpoint.close()
    assert not (run_dir / SOCKET_FILE).exists()


def _old_python(version: str) -> str:
    """The Python of older base images that scripts/setup keeps in the cache, or skip."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "panorama-emulator"
    python = (
        Path(os.environ.get("PANORAMA_EMULATOR_CACHE") or home) / f"sdk-python{version}" / "bin" / "python"
    )
    if not python.is_file():
        pytest.skip(f"no Python {version} (scripts/setup makes one where the machine has it)")
    return str(python)


@pytest.mark.parametrize("version", ["3.7", "3.8"])
def test_the_forwarder_runs_on_the_pythons_of_older_images(run_dir: Path, version: str) -> None:
    python = _old_python(version)
    caller = {"AWS_ACCESS_KEY_ID": "AKIAOLDPYTHON", "AWS_SECRET_ACCESS_KEY": "s3cret"}
    endpoint = start_aws("host", run_dir, environ=caller)
    assert endpoint is not None
    try:
        code = (
            "import os, sys, urllib.request; "
            "request = urllib.request.Request(os.environ['AWS_CONTAINER_CREDENTIALS_FULL_URI'], "
            "headers={'Authorization': os.environ['AWS_CONTAINER_AUTHORIZATION_TOKEN']}); "
            "print(sys.version_info[1], urllib.request.urlopen(request).read().decode())"
        )
        command = [python, str(GATE), str(run_dir / SOCKET_FILE), "host", "--", python, "-c", code]
        env = {"PATH": "/usr/bin:/bin", **endpoint.app_env()}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        minor, served = done.stdout.split(" ", 1)
        assert minor == version.split(".")[1]
        assert json.loads(served)["AccessKeyId"] == "AKIAOLDPYTHON"
    finally:
        endpoint.close()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("ending", ["exits", "killed"])
def test_the_forwarder_ends_with_the_app_outside_a_sandbox(run_dir: Path, ending: str) -> None:
    code = "import sys; print('ready', flush=True); sys.stdin.readline()"
    gate = [sys.executable, str(GATE), str(run_dir / SOCKET_FILE), "local", "--"]
    command = [*gate, sys.executable, "-c", code]
    app = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    forwarders: list[int] = []
    try:
        assert app.stdout is not None and app.stdout.readline() == "ready\n"
        forwarders = _children(app.pid)  # the gate became the app: its child is the forwarder
        assert len(forwarders) == 1
        if ending == "killed":
            app.kill()
        else:
            app.communicate("\n")
        app.wait()
        for _ in range(400):
            if not _running(forwarders[0]):
                break
            time.sleep(0.05)
        assert not _running(forwarders[0]), f"forwarder {forwarders[0]} outlived its app"
    finally:
        app.kill()
        app.wait()
        for pid in forwarders:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_host_mode_without_credentials_says_what_to_set(run_dir: Path) -> None:
    with pytest.raises(DeviceError, match="no AWS credentials in the environment"):
        host_credentials({"AWS_REGION": "eu-west-1"})
    with pytest.raises(DeviceError, match="--aws must be one of none, host, local"):
        start_aws("cloud", run_dir)
    assert start_aws("none", run_dir) is None


def test_gate_runs_the_entry_on_the_images_python(local_endpoint: AwsEndpoint, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr" / "bin").mkdir(parents=True)
    entry = ("python3.8", "/panorama/app.py")
    gated = local_endpoint.gate(entry, rootfs, "/usr/local/bin:/usr/bin")
    assert gated[:2] == ("python3.8", "/opt/panorama-emulator/sdk/panoramasdk/_awsgate.py")
    assert gated[-3:] == ("--", *entry)
    with pytest.raises(DeviceError, match="needs a Python in the app's image"):
        local_endpoint.gate(("/panorama/run.sh",), rootfs, "/usr/local/bin:/usr/bin")
    (rootfs / "usr" / "bin" / "python3").symlink_to("/usr/bin/python3.11")  # dangling outside: still found
    assert (
        local_endpoint.gate(("/panorama/run.sh",), rootfs, "/usr/local/bin:/usr/bin")[0] == "/usr/bin/python3"
    )


def test_run_serve_and_dev_offer_the_three_modes() -> None:
    from click.testing import CliRunner

    from emulator.cli import main

    for command in ("run", "serve", "dev"):
        result = CliRunner().invoke(main, [command, "--aws", "cloud"])
        assert result.exit_code == 2
        assert "'cloud' is not one of 'none', 'host', 'local'" in result.output


def test_run_prints_the_metrics_kept() -> None:
    from emulator.device.aws import cloudwatch_lines

    store = MetricStore()
    store.answer(HOST, QUERY_HEADERS, "/", _query_body())
    lines = cloudwatch_lines({"mode": "local", "cloudwatch": store.figures()})
    assert lines[0] == "CloudWatch kept here (--aws local): 1 calls, 0 refused, 3 metrics"
    assert "  Shop/People{Camera=c1}: 1 samples, last 2.5 Count" in lines
    assert cloudwatch_lines({"mode": "none"}) == [] and cloudwatch_lines(None) == []


def _connect(socket_path: Path, target: str) -> bytes:
    """A proxy CONNECT straight on the endpoint's unix socket; the answer's first line and what follows."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(60)
        client.connect(str(socket_path))
        client.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        answer = client.recv(4096)
        if answer.startswith(b"HTTP/1.1 200"):
            client.sendall(b"ping\n")
            answer += client.recv(4096)
        return answer


def test_local_mode_carries_other_https_but_never_to_this_machines_loopback(run_dir: Path) -> None:
    endpoint = start_aws("local", run_dir, network="host")
    assert endpoint is not None
    server = socket.create_server(("0.0.0.0", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(conn.recv(4096))

    threading.Thread(target=echo, daemon=True).start()
    try:
        for target in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::ffff:127.0.0.1]:{port}"):
            assert _connect(run_dir / SOCKET_FILE, target).startswith(b"HTTP/1.1 403"), target
        # This machine's address on its default route (a UDP connect sends nothing).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(("192.0.2.1", 9))
            except OSError:
                pytest.skip("this machine has no route other than loopback")
            outside = probe.getsockname()[0]
        answer = _connect(run_dir / SOCKET_FILE, f"{outside}:{port}")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ping\n")
    finally:
        server.close()
        endpoint.close()


def test_a_body_that_inflates_past_the_limit_is_refused() -> None:
    bomb = gzip.compress(b"0" * (65 * 1024 * 1024), compresslevel=1)
    reply = MetricStore().answer(HOST, {**QUERY_HEADERS, "content-encoding": "gzip"}, "/", bomb)
    assert reply.status == 400 and b"larger than" in reply.body
