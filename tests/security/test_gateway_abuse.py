"""Hostile clients against a real `qbo-operator gateway` process (loopback only, bounded in size and time):
oversized bodies, headers and URLs, slow-loris connections, hostile Connect-link queries. Through all of
it the gateway stays up and keeps answering everyone else, and never answers 5xx to a bad request."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from qbo_operator.gateway.webhooks import BODY_READ_SECONDS
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.kube import create_integration
from tests.support.ledger import SECRETS, Report
from tests.support.processes import Gateway, Keys
from tests.support.webhooks import cloudevent, dumps

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
SLOW_CONNECTIONS = 200


@pytest.fixture
def gateway(cluster: ControlPlane, tmp_path: Path) -> Iterator[Gateway]:
    keys = Keys()
    SECRETS.add_secrets(keys.secret_values(), "gateway key (abuse tests)")
    gw = Gateway(cluster.kubeconfig, keys, tmp_path / "gateway.log").start()
    try:
        yield gw
    finally:
        gw.stop()
        SECRETS.add_text("gateway log (abuse tests)", gw.log())


def still_serving(gw: Gateway) -> None:
    """The gateway answers a health check and a valid webhook promptly."""
    assert gw.proc is not None and gw.proc.poll() is None, f"the gateway died:\n{gw.log()[-3000:]}"
    assert httpx.get(f"{gw.local}/healthz", timeout=10).status_code == 200
    ok = gw.post_webhook(dumps([cloudevent("9130355357483456", "1")]))
    assert ok.status_code == 200, ok.text


def raw_request(port: int, head: bytes, body_chunks: Iterator[bytes] | None = None, timeout: float = 30) -> bytes:
    """Send a request over a plain socket (to send what no well-behaved client would); return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        try:
            for chunk in body_chunks or iter(()):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is what counts
        s.shutdown(socket.SHUT_WR) if body_chunks is None else None
        data = b""
        try:
            while len(data) < 65536:
                part = s.recv(65536)
                if not part:
                    break
                data += part
                if b"\r\n\r\n" in data:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return data


def status_of(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0


def test_oversized_requests_are_refused_and_the_gateway_stays_up(gateway: Gateway, report: Report) -> None:
    port = gateway.port
    cases: list[tuple[str, int]] = []

    # 64 MiB announced, the body streamed: refused from the Content-Length, long before it is all sent.
    head = (
        f"POST /webhooks/quickbooks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {64 * MIB}\r\nintuit-signature: x\r\n\r\n"
    ).encode()
    sent = {"bytes": 0}

    def big_body() -> Iterator[bytes]:
        chunk = b"x" * 65536
        while sent["bytes"] < 64 * MIB:
            sent["bytes"] += len(chunk)
            yield chunk

    answer = raw_request(port, head, big_body())
    cases.append(("64 MiB webhook (Content-Length)", status_of(answer)))
    assert status_of(answer) == 413, answer[:200]
    assert sent["bytes"] < 64 * MIB, "the gateway read the whole oversized body"

    # Chunked, no Content-Length: the limit holds while reading.
    def chunked() -> Iterator[bytes]:
        for _ in range(40):
            yield b"10000\r\n" + b"y" * 65536 + b"\r\n"
        yield b"0\r\n\r\n"

    head = (
        b"POST /webhooks/quickbooks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"intuit-signature: x\r\n\r\n"
    )
    answer = raw_request(port, head, chunked())
    cases.append(("2.5 MiB chunked webhook", status_of(answer)))
    assert status_of(answer) == 413, answer[:200]

    # A 200 KiB header, a 100 KiB URL, 500 headers: refused by the HTTP parser, not a crash.
    # (aiohttp's parser answers 400, or for some of these drops the connection without an answer: both refuse)
    huge_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n"
    long_url = b"GET /connect/ns/" + b"n" * (100 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n"
    for what, request in (("200 KiB header", huge_header), ("100 KiB URL", long_url), ("500 headers", many)):
        answer = raw_request(port, request)
        cases.append((what, status_of(answer) if answer else 400))
    # The Connect button and the callback take no large bodies either.
    connect = httpx.post(f"{gateway.local}/connect/ns/name?exp=1&sig=x", content=b"z" * (3 * MIB), timeout=30)
    cases.append(("3 MiB POST to /connect", connect.status_code))

    for what, status in cases:
        assert 400 <= status < 500, f"{what}: answered {status}"
    still_serving(gateway)
    report.row(
        "hostile input", "oversized requests to the gateway (refused 4xx, stays up)", tried=len(cases), held=len(cases)
    )


def test_slow_loris_connections_do_not_stop_the_gateway_answering_others(gateway: Gateway, report: Report) -> None:
    stop = threading.Event()
    sockets: list[socket.socket] = []
    for i in range(SLOW_CONNECTIONS):
        s = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        # half the connections dribble headers, the other half announce a body and send it a byte at a time
        if i % 2:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        else:
            s.sendall(b"POST /webhooks/quickbooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        sockets.append(s)

    def dribble() -> None:
        while not stop.wait(0.5):
            for i, s in enumerate(sockets):
                with contextlib.suppress(OSError):
                    s.sendall(b"X-a: b\r\n" if i % 2 else b" ")

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    answered = 0
    try:
        for _ in range(10):
            still_serving(gateway)
            answered += 2
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(10)
        for s in sockets:
            s.close()
    still_serving(gateway)
    report.row(
        "hostile input", f"slow-loris: {SLOW_CONNECTIONS} slow connections held open", tried=answered, held=answered
    )


def test_a_webhook_body_that_never_finishes_is_answered_408_and_closed(gateway: Gateway, report: Report) -> None:
    """A body announced but not sent does not hold a connection (and a handler) for ever."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=BODY_READ_SECONDS * 4) as s:
        s.sendall(b"POST /webhooks/quickbooks HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        data = b""
        while chunk := s.recv(4096):  # the gateway closes after answering; a hang fails on the socket timeout
            data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    still_serving(gateway)
    report.row("hostile input", "webhook body never completed (408, connection closed)", tried=1, held=1)


HOSTILE_LINK_QUERIES = [
    "exp=%C2%B2&sig=x",  # "²": str.isdigit() says yes, int() says no
    "exp=%E2%91%A0&sig=x",  # "①"
    "exp=" + "9" * 5000 + "&sig=x",  # past Python's 4300-digit int() limit
    "exp=-1&sig=x",
    "exp=1e9&sig=x",
    "exp=&sig=",
    "sig=" + quote("\x00\udcff".encode("utf-8", "surrogatepass").decode("latin-1")),
    "exp=1&exp=2&sig=a&sig=b",
    "exp=99999999999999999999&sig=" + "A" * 43,
]


def test_hostile_connect_link_queries_get_a_refusal_page_never_a_5xx(
    cluster: ControlPlane, namespace: str, gateway: Gateway, report: Report
) -> None:
    create_integration(cluster, namespace, "acme")
    answers = {}
    for query in HOSTILE_LINK_QUERIES:
        for method in ("GET", "POST"):
            resp = httpx.request(method, f"{gateway.local}/connect/{namespace}/acme?{query}", timeout=30)
            answers[(method, query[:40])] = resp.status_code
            assert "location" not in resp.headers, (method, query[:40])
    bad = {k: v for k, v in answers.items() if not 400 <= v < 500}
    report.row(
        "hostile input",
        "hostile Connect-link queries (refusal page, no 5xx)",
        tried=len(answers),
        held=len(answers) - len(bad),
    )
    assert bad == {}, f"answered other than 4xx: {bad}\n{gateway.log()[-1500:]}"
    assert "Traceback" not in gateway.log()
    still_serving(gateway)
