"""Pull mode: ExchangePoller through the real ccxt (async binance) against a fake USDⓈ-M futures account."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import pytest

from tests.fakes.fake_binance_futures import FakeBinanceFutures
from tests.fakes.fixtures import FAKE_CCXT_CONFIG, FAKE_NOW_MS
from tests.service_kit import ManualClock as Clock
from tradeguard.adapters.exchange_poller import ExchangePoller
from tradeguard.adapters.status import Backoff
from tradeguard.core.events import Event
from tradeguard.errors import InputError

API_KEY = "read-only-key"
CCXT_CONFIG = {**FAKE_CCXT_CONFIG, "timeout_on_exit": 0}
T0 = datetime(2024, 1, 10, 12, 30, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


@pytest.fixture
def fake() -> Iterator[FakeBinanceFutures]:
    with FakeBinanceFutures(now_ms=FAKE_NOW_MS, api_key=API_KEY, wallet={"USDT": 10_000.0}) as server:
        # long 0.5 BTC from 30 000, now 31 000: +500; short 10 ETH isolated from 2 000, now 2 100: -1 000
        server.set_position("BTCUSDT", 0.5, 30_000.0, 31_000.0, leverage=5, liquidation_price=12_500.0)
        server.set_position(
            "ETHUSDT", -10, 2_000.0, 2_100.0, leverage=4, margin_type="isolated", liquidation_price=2_450.0
        )
        yield server


def poller(fake: FakeBinanceFutures, **kwargs: Any) -> ExchangePoller:
    kwargs.setdefault("config", CCXT_CONFIG)
    kwargs.setdefault("clock", Clock(T0))
    return ExchangePoller("main", "binance", API_KEY, "secret", api_url=fake.url, **kwargs)


async def _poll(p: ExchangePoller, times: int = 1) -> list[list[Event]]:
    try:
        return [await p.poll_once() for _ in range(times)]
    finally:
        await p.close()


def by_type(events: list[Event]) -> dict[str, Event]:
    return {e.type: e for e in events}


def test_one_poll_yields_balance_equity_and_open_positions(fake: FakeBinanceFutures) -> None:
    (events,) = asyncio.run(_poll(poller(fake)))

    assert [e.type for e in events] == ["balance", "equity", "positions"]
    assert {(e.account, e.exchange, e.bot, e.ts) for e in events} == {("main", "binance", "poller", T0)}
    assert [e.id for e in events] == [f"poll:binance:{t}:{T0_MS}" for t in ("balance", "equity", "positions")]
    got = by_type(events)
    # wallet 10 000 + unrealized (+500 - 1 000)
    assert got["equity"].payload.model_dump() == {"total_equity": 9_500.0, "currency": "USDT"}
    balance = got["balance"].payload
    assert balance.total == {"USDT": 9_500.0}
    assert balance.used == {"USDT": pytest.approx(15_500 / 5 + 21_000 / 4)}  # initial margins
    positions = {p.symbol: p for p in got["positions"].payload.positions}
    assert set(positions) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    btc, eth = positions["BTC/USDT:USDT"], positions["ETH/USDT:USDT"]
    assert (btc.side, btc.contracts, btc.notional, btc.unrealizedPnl) == ("long", 0.5, 15_500.0, 500.0)
    assert (btc.entryPrice, btc.markPrice, btc.liquidationPrice) == (30_000.0, 31_000.0, 12_500.0)
    assert (btc.marginMode, btc.leverage) == ("cross", 5.0)  # v3 has no leverage: notional / initial margin
    assert (eth.side, eth.contracts, eth.notional, eth.unrealizedPnl) == ("short", 10.0, 21_000.0, -1_000.0)
    assert (eth.marginMode, eth.leverage, eth.liquidationPrice) == ("isolated", 4.0, 2_450.0)
    assert eth.signed_notional == -21_000.0
    # only read endpoints, all signed with the key
    assert set(fake.signed_paths()) == {
        "/fapi/v3/account",
        "/fapi/v3/positionRisk",
        "/fapi/v1/leverageBracket",
    }
    assert all(r.api_key == API_KEY and r.params.get("signature") for r in fake.signed_requests)
    assert not [r for r in fake.requests if r.path.startswith("/sapi")]


def test_flat_positions_are_dropped_and_the_v2_endpoints_work_too(fake: FakeBinanceFutures) -> None:
    fake.set_position("ETHUSDT", 0, 2_000.0, 2_100.0)
    options = {"fetchPositionsRisk": {"useV2": True}, "fetchBalance": {"useV2": True}}
    (events,) = asyncio.run(_poll(poller(fake, config={**CCXT_CONFIG, "options": options})))

    (btc,) = by_type(events)["positions"].payload.positions
    assert (btc.symbol, btc.side, btc.leverage, btc.marginMode) == ("BTC/USDT:USDT", "long", 5.0, "cross")
    assert by_type(events)["equity"].payload.total_equity == 10_500.0
    assert {"/fapi/v2/account", "/fapi/v2/positionRisk"} <= set(fake.signed_paths())


def test_ids_are_deterministic_per_poll_time(fake: FakeBinanceFutures) -> None:
    clock = Clock(T0)
    p = poller(fake, clock=clock)

    async def three() -> list[list[Event]]:
        try:
            first = await p.poll_once()
            again = await p.poll_once()
            clock.now = T0 + timedelta(seconds=15)
            later = await p.poll_once()
            return [first, again, later]
        finally:
            await p.close()

    first, again, later = asyncio.run(three())

    assert [e.id for e in first] == [e.id for e in again]
    assert first == again  # same state, same time: a redelivery is identical
    assert [e.id for e in later] == [
        f"poll:binance:{t}:{T0_MS + 15_000}" for t in ("balance", "equity", "positions")
    ]


def test_an_exchange_500_is_reported_retried_and_recovers(fake: FakeBinanceFutures) -> None:
    delays: list[float] = []
    received: list[list[Event]] = []
    p = poller(fake, interval_s=7.0, backoff=Backoff(base_s=0.5, cap_s=4.0, jitter=False))

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(received) == 1:  # stop after the first successful delivery
            raise asyncio.CancelledError

    async def on_events(events: list[Event]) -> None:
        received.append(events)
        assert p.status.consecutive_errors == 0

    p.sleep = sleep
    fake.fail_next(2, HTTPStatus.INTERNAL_SERVER_ERROR, path="/fapi/v3/account")

    async def main() -> None:
        try:
            await p.run(on_events)
        finally:
            await p.close()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())

    assert delays == [0.5, 1.0, 7.0]  # two backoffs, then the poll interval
    assert len(received) == 1 and [e.type for e in received[0]] == ["balance", "equity", "positions"]
    status = p.status
    assert status.name == "poll:main:binance" and status.reachable and status.errors_total == 2
    assert "/fapi/v3/account 500 Internal Server Error" in (status.last_error or "")
    assert "signature" not in (status.last_error or "")


def test_status_shows_an_outage_while_it_lasts(fake: FakeBinanceFutures) -> None:
    fake.fail_next(1, HTTPStatus.INTERNAL_SERVER_ERROR, path="/fapi/v3/positionRisk")
    p = poller(fake)

    async def main() -> tuple[bool, int]:
        try:
            with pytest.raises(Exception, match="binance"):
                await p.poll_once()
            down = (p.status.reachable, p.status.consecutive_errors)
            await p.poll_once()
            return down
        finally:
            await p.close()

    assert asyncio.run(main()) == (False, 1)
    assert p.status.reachable and p.status.errors_total == 1


def test_run_delivers_every_interval_and_stops_cleanly_on_cancel(fake: FakeBinanceFutures) -> None:
    received: list[list[Event]] = []
    clock = Clock(T0)
    p = poller(fake, interval_s=0.01, clock=clock)

    async def on_events(events: list[Event]) -> None:
        received.append(events)
        clock.now += timedelta(seconds=15)
        if len(received) == 2:
            raise RuntimeError("store down")  # a failing callback does not stop the loop

    async def main() -> bool:
        task = asyncio.create_task(p.run(on_events))
        for _ in range(500):
            if len(received) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await p.close()
        return task.cancelled()

    assert asyncio.run(main())
    assert len(received) >= 3
    ids = [batch[0].id for batch in received]
    assert len(set(ids)) == len(ids)


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(InputError, match="not a ccxt exchange"):
        ExchangePoller("main", "binanse", "k", "s")
    with pytest.raises(InputError, match="market type"):
        ExchangePoller("main", "binance", "k", "s", market_types=("options",))
    with pytest.raises(InputError, match="API key"):
        ExchangePoller("main", "binance", "", "s")
