"""Audit trail: seal+append throughput, and `tradeguard audit verify` of 1,000,000 records on SQLite.

Usage: python bench/bench_audit_verify.py [--records 1000000] [--seal 50000] [--full] [--jobs N] [--keep PATH]

1. seal only (canonical JSON + Ed25519 + SHA-256, no database) for --seal events;
2. AuditLog.append (one transaction each, SQLite synchronous=FULL) and append_many (batches of 500);
3. a chain of --records records sealed in memory and bulk-inserted into a temporary SQLite store;
4. `audit verify` (hashes and links of every record + the last two signatures), as the CLI runs it;
5. with --full: `audit verify --all-signatures --jobs N` (every Ed25519 signature, N processes).

--keep PATH keeps (or reuses, when it exists) the generated database.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tradeguard.adapters.signing_key import AuditKey, load_signing_key
from tradeguard.adapters.store import Store
from tradeguard.adapters.store.audit_log import AuditLog
from tradeguard.cli import audit as audit_cli
from tradeguard.core import audit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = (audit.PORTFOLIO_CHECK, audit.DRAWDOWN_ALERT, audit.BREAKER_TRANSITION, audit.ORDER_DECISION)


def payload(i: int, rng: random.Random) -> dict[str, object]:
    """A typical portfolio-check payload (~350 bytes of canonical JSON)."""
    return {
        "decision": "allow" if rng.random() > 0.1 else "block",
        "reasons": ["gross_leverage_ok", "drawdown_ok"],
        "gross_leverage": round(rng.uniform(0.5, 4.0), 4),
        "net_exposure_usd": round(rng.uniform(-5e5, 5e5), 2),
        "drawdown_pct": {"1h": round(rng.uniform(0, 3), 3), "1d": round(rng.uniform(0, 8), 3)},
        "positions": [
            {"symbol": "BTC/USDT:USDT", "side": "long", "notional": round(rng.uniform(1e3, 1e5), 2)},
            {"symbol": "ETH/USDT:USDT", "side": "short", "notional": round(rng.uniform(1e3, 1e5), 2)},
        ],
        "check_id": i,
    }


def bench_sealing(key: AuditKey, count: int, workdir: Path) -> None:
    rng = random.Random(1)
    events = [audit.AuditEvent(TYPES[i % 4], f"acct-{i % 7}", payload(i, rng), T0) for i in range(count)]
    start = time.perf_counter()
    prev = None
    for i, event in enumerate(events):
        prev = audit.seal(
            prev,
            record_id=f"r{i}",
            event_type=event.type,
            account=event.account,
            ts=event.ts,
            payload=event.payload,
            signer=key,
        )
    took = time.perf_counter() - start
    print(f"seal only:            {count:>9,} events  {took:6.2f} s  {count / took:>9,.0f} /s")

    with Store.open(f"sqlite:///{workdir / 'append.db'}") as store:
        log = AuditLog(store.engine, key)
        single = min(count, 2_000)
        start = time.perf_counter()
        for event in events[:single]:
            log.append(event.type, event.account, dict(event.payload), event.ts)
        took = time.perf_counter() - start
        print(f"append (1 per txn):   {single:>9,} events  {took:6.2f} s  {single / took:>9,.0f} /s")
        start = time.perf_counter()
        for i in range(0, count, 500):
            log.append_many(events[i : i + 500])
        took = time.perf_counter() - start
        print(f"append_many (500):    {count:>9,} events  {took:6.2f} s  {count / took:>9,.0f} /s")
        result = log.verify(all_signatures=True)
        assert result.ok, result


def build_chain(key: AuditKey, path: Path, records: int) -> None:
    """Seal `records` records in memory and bulk-insert them (the schema comes from the migrations)."""
    with Store.open(f"sqlite:///{path}"):
        pass
    rng = random.Random(2)
    templates = [audit.canonical_json(payload(i, rng)) for i in range(1_000)]
    start = time.perf_counter()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous = OFF")
    prev: audit.AuditRecord | None = None
    rows = []
    for i in range(records):
        event = audit.PreparedEvent(
            TYPES[i % 4], f"acct-{i % 7}", T0 + timedelta(milliseconds=250 * i), templates[i % 1_000]
        )
        prev = audit.seal_prepared(prev, event, f"{i:012d}-{rng.getrandbits(64):016x}", key)
        rows.append(
            (
                prev.seq,
                prev.id,
                prev.type,
                prev.account,
                prev.ts.strftime("%Y-%m-%d %H:%M:%S.%f"),  # SQLAlchemy's SQLite DATETIME storage format
                prev.payload_json,
                prev.prev_hash,
                prev.hash,
                prev.signature,
                prev.key_id,
            )
        )
        if len(rows) == 50_000 or i == records - 1:
            with connection:
                connection.executemany("INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            rows.clear()
            sys.stdout.write(f"\r  sealed {i + 1:,} / {records:,}")
            sys.stdout.flush()
    connection.close()
    took = time.perf_counter() - start
    print(f"\rbuild chain:          {records:>9,} records {took:6.1f} s  {records / took:>9,.0f} /s")


def run_cli(db: Path, key_file: Path, *extra: str) -> tuple[float, float]:
    """`tradeguard audit verify` as the CLI runs it: (wall s, CPU s of this process)."""
    parser = argparse.ArgumentParser()
    audit_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["audit", "verify", "--db", f"sqlite:///{db}", "--public-key", str(key_file), *extra]
    )
    wall, cpu = time.perf_counter(), time.process_time()
    code = audit_cli.run_verify(args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if code != 0:
        raise SystemExit(f"verify failed with exit code {code}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--seal", type=int, default=50_000, help="events for the seal/append figures (0: skip)"
    )
    parser.add_argument("--full", action="store_true", help="also verify every signature (slow)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, help="database file to keep or reuse")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        key_pem = args.keep.with_suffix(".key.pem") if args.keep else workdir / "key.pem"
        if key_pem.exists():
            key = load_signing_key(key_pem, environ={}, create=False)
        else:
            key = AuditKey.generate()
            key_pem.write_bytes(key.private_key_pem())
            key_pem.chmod(0o600)
        if args.seal:
            bench_sealing(key, args.seal, workdir)
        db = args.keep or workdir / "audit.db"
        if not db.exists():
            build_chain(key, db, args.records)
        else:
            print(f"reusing {db}")
        print(f"database: {db.stat().st_size / 1e6:,.0f} MB")
        wall, cpu = run_cli(db, key_pem)
        print(f"audit verify:         {args.records:>9,} records {wall:6.1f} s wall, {cpu:6.1f} s CPU")
        if args.full:
            wall, cpu = run_cli(db, key_pem, "--all-signatures", "--jobs", str(args.jobs))
            print(
                f"audit verify --all-signatures --jobs {args.jobs}: {args.records:,} records "
                f"{wall:6.1f} s wall, {cpu:6.1f} s CPU in the main process"
            )


if __name__ == "__main__":
    main()
