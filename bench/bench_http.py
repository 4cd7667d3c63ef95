"""GET /v1/risk over loopback: throughput (wrk) and p50/p99 at a fixed 1,000 req/s, beside a bare Starlette
route serving the same JSON, each server one uvicorn process. Needs `wrk` (apt-get install wrk).

Usage: python bench/bench_http.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tradeguard.adapters.store import Store

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(factory: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        f"http_targets:{factory}",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT / "bench", env={**os.environ, **env})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{factory} did not start")


def wait_ready(port: int, headers: dict[str, str]) -> bytes:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/risk", params={"pair": "BTC/USDT"}, headers=headers)
        if r.status_code == 200:
            return r.content
        time.sleep(0.2)
    raise RuntimeError(f"/v1/risk never answered 200 (last {r.status_code})")


def run_wrk(url: str, headers: dict[str, str], seconds: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", url]
    for k, v in headers.items():
        cmd[1:1] = ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99")}


async def fixed_rate(
    port: int, path: str, headers: dict[str, str], rate: float, seconds: float
) -> np.ndarray:
    """Latencies (ms) measured from each request's scheduled time (no coordinated omission)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode()
    n = int(rate * seconds)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(16)]
    idle: asyncio.Queue = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    latencies = np.empty(n)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        reader, writer = await idle.get()
        writer.write(request)
        header = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", header, re.IGNORECASE).group(1))
        await reader.readexactly(length)
        latencies[i] = (loop.time() - scheduled) * 1e3
        idle.put_nowait((reader, writer))

    await asyncio.gather(*(one(i) for i in range(n)))
    for _, writer in conns:
        writer.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk")
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        with Store.open(url) as store:
            token = store.create_key("bench", "read", now=datetime.now(UTC)).token
        headers = {"Authorization": f"Bearer {token}"}
        tg_port = free_port()
        tg = start_server("tradeguard_app", tg_port, {"BENCH_STORE_URL": url})
        try:
            body = wait_ready(tg_port, headers)
            bare_port = free_port()
            bare = start_server("bare_app", bare_port, {"BENCH_BODY": body.decode()})
            try:
                print(
                    f"GET /v1/risk?pair=BTC/USDT, {len(body)} bytes of JSON, one uvicorn process each, "
                    f"wrk -t1 -c32 {args.seconds}s on the same 2-core machine"
                )
                for name, port, hdrs in (("tradeguard", tg_port, headers), ("bare Starlette", bare_port, {})):
                    w = run_wrk(f"http://127.0.0.1:{port}/v1/risk?pair=BTC/USDT", hdrs, args.seconds)
                    lat = asyncio.run(fixed_rate(port, "/v1/risk?pair=BTC/USDT", hdrs, 1000.0, args.seconds))
                    p50, p99 = np.percentile(lat, [50, 99])
                    print(
                        f"{name:15s} max {w['rps']:8.0f} req/s "
                        f"(p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms)"
                        f" | at 1,000 req/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
                    )
            finally:
                bare.terminate()
                bare.wait()
        finally:
            tg.terminate()
            tg.wait()


if __name__ == "__main__":
    main()
