"""Webhooks: audit events fanned out to webhooks, enqueue-to-delivery latency against a local receiver.

Usage: python bench/bench_webhooks.py [--rate 1000] [--seconds 10] [--webhooks 10] [--store-url URL]
                                      [--asyncio] [--receivers 1] [--receiver uvicorn|raw]

The service side runs as `serve` runs it: events are appended in batches (as the order guard's audit queue
does: whatever arrived while the previous batch was being written) to the signed, hash-chained audit log,
the outbox enqueues one delivery per webhook in the same transaction, and the `WebhookWorker` POSTs them,
signed, on uvloop (as uvicorn runs the service; `--asyncio` for the plain loop). The receiver is a
separate process on 127.0.0.1 that answers 204 and notes when each delivery arrived: uvicorn (httptools)
with a bare ASGI app, or with `--receiver raw` an asyncio protocol on the httptools parser, which leaves
more of a shared machine's CPU to the service being measured.

Latency runs from the moment an event is handed to the writer — before it is signed and stored — to its
arrival at the receiver: the time a bot's risk event takes to reach a subscriber, a little more than the
outbox's own enqueue-to-delivery. Store: a temporary SQLite file unless --store-url names one (e.g. an
empty PostgreSQL database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradeguard.adapters.signing_key import AuditKey
from tradeguard.adapters.store import Store
from tradeguard.adapters.store.audit_log import AuditLog
from tradeguard.adapters.store.outbox import Outbox
from tradeguard.adapters.store.webhooks import WebhookStore
from tradeguard.adapters.webhooks.policy import DeliveryPolicy
from tradeguard.adapters.webhooks.worker import WebhookWorker
from tradeguard.core.audit import ORDER_DECISION, AuditEvent

TICK_S = 0.01  # events are put in bursts of rate/100, every 10 ms


class Received:
    """What the receiver saw: enqueue-to-arrival latencies and the distinct webhook-ids."""

    sent_at = re.compile(rb'"sent_at":([-+.0-9eE]+)')

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ids: set[bytes] = set()

    def note(self, webhook_id: bytes, body: bytes) -> None:
        match = self.sent_at.search(body)
        if match is not None:
            self.latencies.append(time.time() - float(match.group(1)))
        self.ids.add(webhook_id)

    def stats(self) -> bytes:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        stats = {
            "latencies": self.latencies,
            "unique_ids": len(self.ids),
            "cpu_s": cpu.ru_utime + cpu.ru_stime,
        }
        return json.dumps(stats).encode()


def serve_uvicorn(port: int, received: Received) -> None:
    """uvicorn (httptools) with a bare ASGI app: 204 to every POST, GET /stats."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": received.stats()})
            return
        received.note(dict(scope["headers"]).get(b"webhook-id", b""), body)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", http="httptools", access_log=False)


def serve_raw(port: int, received: Received) -> None:
    """An HTTP/1.1 server as lean as Python gets: an asyncio protocol on the httptools parser, uvloop."""
    import httptools
    import uvloop

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.webhook_id = b""

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            if name.lower() == b"webhook-id":
                self.webhook_id = value

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            if self.parser.get_method() == b"GET":
                stats = received.stats()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(stats), stats))
            else:
                received.note(self.webhook_id, b"".join(self.body))
                self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            self.body, self.webhook_id = [], b""

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_receivers(count: int, kind: str) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    ports = [free_port() for _ in range(count)]
    command = [sys.executable, __file__, "--receiver", kind, "--serve-receiver"]
    procs = [subprocess.Popen([*command, str(p)]) for p in ports]
    deadline = time.monotonic() + 20
    for port in ports:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("receiver did not start") from None
                time.sleep(0.05)
    return procs, ports


def receiver_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as response:
        return json.loads(response.read())


class Writer:
    """Appends what was put since its last batch, one batch at a time, in a thread (like `AuditQueue`)."""

    def __init__(self, audit_log: AuditLog) -> None:
        self.audit_log = audit_log
        self.pending: list[AuditEvent] = []
        self.ready = asyncio.Event()

    def put(self, event: AuditEvent) -> None:
        self.pending.append(event)
        self.ready.set()

    async def run(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            batch, self.pending = self.pending, []
            await asyncio.to_thread(self.audit_log.append_many, batch)


async def produce(writer: Writer, rate: int, seconds: float) -> int:
    """Put `rate` events a second for `seconds`, in bursts every 10 ms; the count put."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    for tick in range(round(seconds / TICK_S)):
        while sent < int(rate * (tick + 1) * TICK_S):
            payload = {
                "sent_at": time.time(),
                "i": sent,
                "decision": "allow",
                "reasons": ["caps_ok", "var_ok"],
            }
            writer.put(AuditEvent(ORDER_DECISION, "bench", payload, datetime.now(UTC)))
            sent += 1
        await asyncio.sleep(start + (tick + 1) * TICK_S - loop.time())
    return sent


async def run(args: argparse.Namespace, store_url: str, ports: list[int]) -> tuple[int, float, float]:
    clock = lambda: datetime.now(UTC)  # noqa: E731
    store = Store.open(store_url)
    outbox = Outbox(store.engine, clock=clock)
    hooks = WebhookStore(store.engine, on_change=outbox.invalidate)
    for i in range(args.webhooks):
        url = f"http://127.0.0.1:{ports[i % len(ports)]}/hook/{i}"
        hooks.create("bench", url, ["risk.order_decision"], now=clock())
    writer = Writer(AuditLog(store.engine, AuditKey.generate(), outbox=outbox))
    worker = WebhookWorker(outbox, DeliveryPolicy(), clock=clock)
    writing = asyncio.create_task(writer.run())
    await worker.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    sent = await produce(writer, args.rate, args.seconds)
    produced_s = time.perf_counter() - started
    expected = sent * args.webhooks
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # drain
        await asyncio.sleep(0.5)
        with store.engine.connect() as conn:
            done = conn.exec_driver_sql("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")
            if done.scalar_one() >= expected:
                break
    cpu_s = time.process_time() - cpu_started
    await worker.stop()
    writing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writing
    store.close()
    return sent, produced_s, cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--webhooks", type=int, default=10)
    parser.add_argument("--receivers", type=int, default=1, help="receiver processes")
    parser.add_argument(
        "--receiver", choices=("uvicorn", "raw"), default="uvicorn", help="raw: a bare httptools server"
    )
    parser.add_argument("--store-url", help="default: a temporary SQLite file")
    parser.add_argument("--asyncio", action="store_true", help="the plain asyncio loop instead of uvloop")
    parser.add_argument("--serve-receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        (serve_raw if args.receiver == "raw" else serve_uvicorn)(args.serve_receiver, Received())
        return
    procs, ports = start_receivers(args.receivers, args.receiver)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store_url = args.store_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
            runner = asyncio.run if args.asyncio else __import__("uvloop").run
            sent, produced_s, cpu_s = runner(run(args, store_url, ports))
        stats = [receiver_stats(port) for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    latencies = sorted(lat for s in stats for lat in s["latencies"])
    unique = sum(s["unique_ids"] for s in stats)
    expected = sent * args.webhooks
    backend = (args.store_url or "sqlite").split(":", 1)[0]
    print(
        f"store {backend}, {args.webhooks} webhooks, {len(ports)} {args.receiver} receiver(s), loop "
        f"{'asyncio' if args.asyncio else 'uvloop'}"
    )
    print(f"events put: {sent} in {produced_s:.2f} s ({sent / produced_s:,.0f} events/s)")
    print(f"deliveries: {len(latencies):,} of {expected:,} expected, {unique:,} distinct webhook-ids")
    if latencies:
        span = produced_s + max(0.0, latencies[-1])
        q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
        print(f"sustained: {len(latencies) / span:,.0f} deliveries/s")
        print(
            f"enqueue->delivery ms: p50 {q(0.50):.1f}  p95 {q(0.95):.1f}  p99 {q(0.99):.1f}  max {q(1.0):.1f}"
        )
        receiver_cpu = sum(s["cpu_s"] for s in stats)
        print(
            f"CPU per delivery: service {cpu_s / len(latencies) * 1e6:.0f} us (appends, outbox, sending), "
            f"receiver {receiver_cpu / len(latencies) * 1e6:.0f} us"
        )


if __name__ == "__main__":
    main()
