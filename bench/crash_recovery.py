"""Crash recovery: SIGKILL `tradeguard serve` during an event load, restart it, check nothing was lost.

Usage: python bench/crash_recovery.py [--accounts 2] [--batch 50] [--kill-after 3000] [--min-load-s 1.5]
       [--down-s 0.5] [--no-nats] [--keep]

What it does (everything in a fresh temporary directory, loopback only, no exchange network):
1. writes a TOML config: simulator feed, external sources off, a SQLite store, an audit key file, low breaker
   thresholds (drawdown 5 %, rapid_loss 5 %, global_drawdown 10 %: manual reset), and with NATS a unique
   JetStream stream and durable name for this run;
2. creates one `bot` key per account (`tradeguard keys create`) and starts `tradeguard demo` on a free port;
3. load: one HTTP client per account POSTs batches to /v1/events. Each account's equity falls 25 % over its
   first FALL events (so drawdown, rapid_loss and global_drawdown trip early), then stays flat at the bottom,
   with a `positions` event every 10th event (liquidation far away). An id is ACKNOWLEDGED only when it is
   in a 202 answer's `accepted` or `duplicates`. With NATS, a publisher also sends events of one more
   account to JetStream (`tradeguard.events.<account>`, header Nats-Msg-Id) and keeps publishing while the
   service is down: a JetStream publish ack makes the event durable in the stream, but it counts as
   acknowledged by tradeguard only once the intake stored it, so those ids are checked after the restart,
   once the consumer has drained the stream;
4. once every account is past its falling phase, at least --kill-after events are acknowledged and
   --min-load-s has passed, it reads GET /v1/breakers of every account, then SIGKILLs the service while the
   clients are still sending. Requests in flight or refused are not acknowledged: their batches are kept;
5. restarts the service on the same store, reads the breakers again (before any new event), resends every
   unacknowledged batch with the SAME ids, reads the breakers once more and waits for the NATS intake to
   drain. Messages the killed consumer had fetched but not acked stay ack-pending in JetStream until the
   consumer's ack_wait (30 s) runs out and are then redelivered, so the drain takes ~30 s after the kill
   (--drain-s bounds it); that is JetStream's at-least-once redelivery, not a loss;
6. checks: no (account, id) stored twice; every acknowledged (and every resent) id stored; nothing stored that
   was never sent; `tradeguard audit verify` exits 0 with the PEM from GET /v1/audit/public-key; breaker
   state, trips, opened_at, cooldown_until and half_open_at of every breaker equal their values before the
   kill, both right after the restart and after the resend.

Why breaker states may be compared exactly: every breaker that trips does so in the falling phase, which is
acknowledged before the kill; afterwards the readings do not change (flat equity), and the run lasts far less
than the shortest cooldown (300 s), so no time-based transition (open -> half_open) can happen. Exception: a
daily_loss breaker reopens at 00:00 UTC; a run crossing midnight UTC may legitimately differ there.
Exit 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TRADEGUARD = [sys.executable, "-m", "tradeguard"]
NATS_URL = "nats://127.0.0.1:4222"
FALL = 400  # events per account over which equity falls 25 %
START_EQUITY = 10_000.0
BOTTOM = 0.75
COMPARED = ("state", "trips", "opened_at", "cooldown_until", "half_open_at", "manual_reset")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADEGUARD, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def envelope(account: str, i: int, t0: datetime) -> dict[str, Any]:
    ts = (t0 + timedelta(milliseconds=i)).isoformat()
    base = {
        "id": f"{account}-{i:07d}",
        "account": account,
        "exchange": "binance",
        "bot": "crashbot",
        "ts": ts,
    }
    if i % 10 == 9:
        position = {
            "symbol": "BTC/USDT:USDT",
            "side": "long",
            "contracts": 0.01,
            "markPrice": 60_000.0,
            "liquidationPrice": 20_000.0,
        }
        return base | {"type": "positions", "payload": {"positions": [position]}}
    equity = START_EQUITY * (1.0 - (1.0 - BOTTOM) * min(i, FALL) / FALL)
    return base | {"type": "equity", "payload": {"total_equity": round(equity, 2), "currency": "USDT"}}


@dataclass
class Client:
    account: str
    token: str
    acked: set[str] = field(default_factory=set)
    pending: list[list[dict[str, Any]]] = field(default_factory=list)  # batches never acknowledged
    sent: set[str] = field(default_factory=set)
    next_i: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    refused_after_kill: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Service:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        t = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*TRADEGUARD, "demo", "--config", str(self.config), "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code < 500:
                    return time.monotonic() - t
            time.sleep(0.1)
        raise RuntimeError(f"service not healthy after 30 s; see {self.log}")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def post(http: httpx.AsyncClient, url: str, client: Client, batch: list[dict[str, Any]]) -> bool:
    """POST one batch; True (and its ids acknowledged) only on a 202 naming every id of the batch."""
    try:
        r = await http.post(f"{url}/v1/events", json={"events": batch}, headers=client.headers)
    except httpx.HTTPError as exc:
        name = type(exc).__name__
        client.errors[name] = client.errors.get(name, 0) + 1
        return False
    if r.status_code != 202:
        key = f"HTTP {r.status_code}"
        client.errors[key] = client.errors.get(key, 0) + 1
        return False
    body = r.json()
    ids = {e["id"] for e in batch}
    answered = set(body["accepted"]) | set(body["duplicates"])
    if answered != ids:
        raise RuntimeError(f"202 for {client.account} does not name the batch: {sorted(ids ^ answered)[:5]}")
    client.acked |= answered
    return True


async def load(
    url: str, client: Client, batch_size: int, t0: datetime, stop_at: list[float], killed: asyncio.Event
) -> None:
    """Send batches until the stop time (set after the kill); failed batches are kept for the resend."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=1.0)) as http:
        for _ in range(100_000):  # bounded
            if time.monotonic() >= stop_at[0]:
                return
            batch = [envelope(client.account, client.next_i + k, t0) for k in range(batch_size)]
            client.next_i += batch_size
            client.sent |= {e["id"] for e in batch}
            if not await post(http, url, client, batch):
                client.pending.append(batch)
                if killed.is_set():
                    client.refused_after_kill += 1
                await asyncio.sleep(0.05)


async def breakers(url: str, clients: list[Client]) -> dict[str, dict[str, dict[str, Any]]]:
    """Breakers of every account by id (GET is side-effect free for state, so retries are safe)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    async with httpx.AsyncClient(timeout=5.0) as http:
        for c in clients:
            for attempt in range(5):
                try:
                    r = await http.get(f"{url}/v1/breakers", params={"account": c.account}, headers=c.headers)
                    r.raise_for_status()
                    out[c.account] = {b["id"]: b for b in r.json()["breakers"]}
                    break
                except httpx.HTTPError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    diffs = []
    for account, states in before.items():
        for bid, b in states.items():
            a = after.get(account, {}).get(bid)
            if a is None:
                diffs.append(f"{account}/{bid}: missing after restart")
                continue
            for f in COMPARED:
                if b.get(f) != a.get(f):
                    diffs.append(f"{account}/{bid}.{f}: {b.get(f)!r} -> {a.get(f)!r}")
    return diffs


def summary_of(states: dict[str, Any]) -> str:
    return "; ".join(
        f"{acct}: " + ", ".join(f"{bid}={b['state']}/{b['trips']}" for bid, b in sorted(s.items()))
        for acct, s in sorted(states.items())
    )


class NatsLoad:
    """Publishes equity events of one account to JetStream, before, during and after the outage."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.account = "crash-nats"
        self.js_acked: set[str] = set()
        self.failed = 0
        self.nc: Any = None

    async def connect(self) -> None:
        import nats

        self.nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=1)

    async def wait_stream(self) -> None:
        js = self.nc.jetstream()
        for _ in range(100):
            with contextlib.suppress(Exception):
                await js.stream_info(self.stream)
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the service did not create stream {self.stream}")

    async def run(self, t0: datetime, stop_at: list[float]) -> None:
        js = self.nc.jetstream()
        subject = f"tradeguard.events.{self.account}"
        for i in range(100_000):  # bounded
            if time.monotonic() >= stop_at[0]:
                return
            event = envelope(self.account, 1_000_000 + i, t0)
            event["payload"] = {"total_equity": START_EQUITY, "currency": "USDT"}
            event["type"] = "equity"
            try:
                await js.publish(
                    subject,
                    json.dumps(event).encode(),
                    headers={"Nats-Msg-Id": f"{self.account}|{event['id']}"},
                    timeout=2,
                )
                self.js_acked.add(event["id"])
            except Exception:
                self.failed += 1
            await asyncio.sleep(0.002)

    async def consumer_state(self, durable: str) -> dict[str, int]:
        info = await self.nc.jetstream().consumer_info(self.stream, durable)
        return {
            "num_pending": info.num_pending or 0,
            "num_ack_pending": info.num_ack_pending or 0,
            "num_redelivered": info.num_redelivered or 0,
        }

    async def close(self, delete: bool) -> None:
        if self.nc is None:
            return
        if delete:
            with contextlib.suppress(Exception):
                await self.nc.jetstream().delete_stream(self.stream)
        await self.nc.close()


def stored(db: Path) -> tuple[dict[str, set[str]], list[tuple[str, str, int]], int]:
    con = sqlite3.connect(db)
    try:
        dupes = con.execute(
            "SELECT account, id, count(*) FROM events GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        by_account: dict[str, set[str]] = {}
        total = 0
        for account, event_id in con.execute("SELECT account, id FROM events"):
            by_account.setdefault(account, set()).add(event_id)
            total += 1
        return by_account, dupes, total
    finally:
        con.close()


async def main_async(args: argparse.Namespace, work: Path) -> int:
    checks: list[tuple[str, bool, str]] = []
    t_start = time.monotonic()
    db = work / "store.db"
    store_url = f"sqlite:///{db}"
    run_id = secrets.token_hex(4)
    stream = f"TG_CRASH_{run_id.upper()}"
    config = work / "tradeguard.toml"
    nats_section = (
        f'[bus]\nnats_url = "{NATS_URL}"\nstream = "{stream}"\ndurable = "crash-{run_id}"\n'
        if args.nats
        else ""
    )
    config.write_text(
        f"""store_url = "{store_url}"
pairs = ["BTC/USDT"]

[feed]
mode = "simulator"

[external]
enabled = false

[audit]
key_file = "{work / "audit_ed25519.pem"}"

[portfolio]
evaluate_every_s = 1.0

[portfolio.breakers.drawdown]
threshold = 5

[portfolio.breakers.rapid_loss]
threshold = 5

[portfolio.breakers.global_drawdown]
threshold = 10

{nats_section}"""
    )
    clients = []
    for k in range(args.accounts):
        account = f"crash-{k}"
        r = cli("keys", "create", "--account", account, "--scope", "bot", "--db", store_url)
        if r.returncode != 0:
            print(f"keys create failed: {r.stderr}")
            return 1
        clients.append(Client(account, r.stdout.strip()))
    service = Service(config, free_port(), work / "service.log")
    nats_load = NatsLoad(stream) if args.nats else None
    try:
        first_start = service.start()
        print(f"service up in {first_start:.2f}s on {service.url} (work dir {work})")
        if nats_load is not None:
            await nats_load.connect()
            await nats_load.wait_stream()
        t0 = datetime.now(UTC) - timedelta(minutes=10)
        stop_at = [float("inf")]
        killed = asyncio.Event()
        tasks = [asyncio.create_task(load(service.url, c, args.batch, t0, stop_at, killed)) for c in clients]
        if nats_load is not None:
            tasks.append(asyncio.create_task(nats_load.run(t0, stop_at)))
        load_start = time.monotonic()
        deadline = load_start + 20
        while time.monotonic() < deadline:
            acked = sum(len(c.acked) for c in clients)
            if (
                all(len(c.acked) > FALL + args.batch for c in clients)
                and acked >= args.kill_after
                and time.monotonic() - load_start >= args.min_load_s
            ):
                break
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
        before = await breakers(service.url, clients)
        acked_at_kill = sum(len(c.acked) for c in clients)
        t_kill = time.monotonic()
        service.kill()
        killed.set()
        print(f"SIGKILL after {t_kill - load_start:.2f}s of load, {acked_at_kill} events acknowledged")
        print(f"breakers before the kill: {summary_of(before)}")
        stop_at[0] = time.monotonic() + args.down_s
        await asyncio.gather(*tasks)
        restart = service.start()
        print(f"restarted in {restart:.2f}s ({time.monotonic() - t_kill:.2f}s after the kill)")
        right_after = await breakers(service.url, clients)
        # resend every unacknowledged batch with the same ids
        resent = resent_dupes = resend_failures = 0
        t_resend = time.monotonic()
        async with httpx.AsyncClient(timeout=10.0) as http:
            for c in clients:
                for batch in c.pending:
                    ok = False
                    for _ in range(5):
                        r = await http.post(
                            f"{service.url}/v1/events", json={"events": batch}, headers=c.headers
                        )
                        if r.status_code == 202:
                            body = r.json()
                            resent_dupes += len(body["duplicates"])
                            c.acked |= set(body["accepted"]) | set(body["duplicates"])
                            ok = {e["id"] for e in batch} <= c.acked
                            break
                        await asyncio.sleep(0.2)
                    resent += len(batch)
                    resend_failures += 0 if ok else 1
        resend_s = time.monotonic() - t_resend
        after_resend = await breakers(service.url, clients)
        drained_s = 0.0
        nats_missing: set[str] = set()
        nats_after: dict[str, int] = {}
        if nats_load is not None:
            nats_pending = await nats_load.consumer_state(f"crash-{run_id}")
            print(f"JetStream consumer after the restart: {nats_pending}")
            t_drain = time.monotonic()
            drain_deadline = t_kill + args.drain_s
            for _ in range(1000):  # bounded by drain_deadline too
                by_account, _, _ = stored(db)
                nats_missing = nats_load.js_acked - by_account.get(nats_load.account, set())
                if not nats_missing or time.monotonic() >= drain_deadline:
                    break
                await asyncio.sleep(0.1)
            drained_s = time.monotonic() - t_drain
            nats_after = await nats_load.consumer_state(f"crash-{run_id}")
        pem_doc = httpx.get(
            f"{service.url}/v1/audit/public-key", headers=clients[0].headers, timeout=5
        ).json()
        pem = work / "audit_public.pem"
        pem.write_text(pem_doc["public_key_pem"])
        service.stop()

        # --- checks ---------------------------------------------------------------------------------------
        by_account, dupes, total = stored(db)
        acked_ids = {(c.account, i) for c in clients for i in c.acked}
        sent_ids = {(c.account, i) for c in clients for i in c.sent}
        stored_ids = {(a, i) for a, ids in by_account.items() for i in ids}
        if nats_load is not None:
            nats_ids = {(nats_load.account, i) for i in nats_load.js_acked}
            acked_ids |= nats_ids - {(nats_load.account, i) for i in nats_missing}
            sent_ids |= nats_ids
        missing = acked_ids - stored_ids
        checks.append(("no (account, id) stored twice", not dupes, f"{len(dupes)} duplicated: {dupes[:5]}"))
        checks.append(
            ("every acknowledged id stored", not missing, f"{len(missing)} missing: {sorted(missing)[:5]}")
        )
        unacked_http = {
            (a, i) for a, i in sent_ids - acked_ids if nats_load is None or a != nats_load.account
        }
        checks.append(
            (
                "every resent batch acknowledged",
                resend_failures == 0 and not unacked_http,
                f"{resend_failures} batches failed, {len(unacked_http)} ids never acknowledged",
            )
        )
        extra = stored_ids - sent_ids
        checks.append(("nothing stored that was not sent", not extra, f"{len(extra)} unexpected"))
        if nats_load is not None:
            checks.append(
                (
                    "every JetStream-acked event stored after the drain",
                    not nats_missing,
                    f"{len(nats_missing)} of {len(nats_load.js_acked)} not stored after {drained_s:.1f}s",
                )
            )
        t_verify = time.monotonic()
        verify = cli("audit", "verify", "--db", store_url, "--public-key", str(pem), "--all-signatures")
        verify_s = time.monotonic() - t_verify
        verify_text = (verify.stdout + verify.stderr).strip()
        checks.append(("audit chain verifies", verify.returncode == 0, verify_text))
        tripped = [f"{a}/{b}" for a, s in before.items() for b, st in s.items() if st["state"] != "closed"]
        checks.append(("breakers tripped before the kill", bool(tripped), ", ".join(tripped) or "none"))
        d1 = compare(before, right_after)
        checks.append(("breakers after restart == before kill", not d1, "; ".join(d1) or "identical"))
        d2 = compare(before, after_resend)
        checks.append(("breakers after resend == before kill", not d2, "; ".join(d2) or "identical"))

        # --- summary --------------------------------------------------------------------------------------
        http_errors: dict[str, int] = {}
        for c in clients:
            for k, v in c.errors.items():
                http_errors[k] = http_errors.get(k, 0) + v
        print()
        print("summary")
        print(f"  accounts (HTTP)                 {len(clients)}, batch {args.batch}")
        print(f"  events sent over HTTP           {sum(len(c.sent) for c in clients)}")
        print(f"  acknowledged before the kill    {acked_at_kill}")
        print(
            f"  failed requests (not acked)     {sum(len(c.pending) for c in clients)} batches {http_errors}"
        )
        print(f"  events resent after restart     {resent} ({resent_dupes} already stored: duplicates)")
        if nats_load is not None:
            print(
                f"  NATS events JetStream-acked     {len(nats_load.js_acked)} "
                f"({nats_load.failed} publishes failed), drained {drained_s:.2f}s after the restart"
            )
            print(f"  JetStream consumer at the end   {nats_after}")
        print(f"  acknowledged in total           {len(acked_ids)}")
        print(f"  rows in events                  {total}")
        print(f"  audit verify                    {verify_text.splitlines()[-1] if verify_text else ''}")
        print(f"  breakers after the resend       {summary_of(after_resend)}")
        print(
            f"  timings                         restart {restart:.2f}s, resend {resend_s:.2f}s, "
            f"verify {verify_s:.2f}s, total {time.monotonic() - t_start:.1f}s"
        )
        print()
        for name, ok, detail in checks:
            print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
        failed = [name for name, ok, _ in checks if not ok]
        print(f"\n{'ALL CHECKS PASSED' if not failed else f'{len(failed)} CHECK(S) FAILED'}")
        return 0 if not failed else 1
    finally:
        service.stop()
        if nats_load is not None:
            await nats_load.close(delete=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=2, help="HTTP client accounts (one key each)")
    parser.add_argument("--batch", type=int, default=50, help="events per POST")
    parser.add_argument("--kill-after", type=int, default=3000, help="acknowledged events before the kill")
    parser.add_argument(
        "--min-load-s", type=float, default=1.5, help="load at least this long before the kill"
    )
    parser.add_argument("--down-s", type=float, default=0.5, help="keep sending this long after the kill")
    parser.add_argument(
        "--drain-s",
        type=float,
        default=45.0,
        help="wait at most this long after the kill for the NATS intake to store every JetStream-acked event "
        "(messages the killed consumer had fetched are redelivered only after its ack_wait, 30 s)",
    )
    parser.add_argument("--no-nats", dest="nats", action="store_false", help="HTTP only (no JetStream)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tg-crash-"))
    try:
        return asyncio.run(main_async(args, work))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
