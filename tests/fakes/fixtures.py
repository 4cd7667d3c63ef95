"""Pytest fixtures for the fakes. Bind them in a test module by assignment::

    from tests.fakes import fixtures

    fake_binance = fixtures.fake_binance

(``from tests.fakes.fixtures import fake_binance`` works too, but ruff then reports F811 on every test
argument named after the fixture.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import ccxt
import pytest

from tests.fakes.fake_binance import DAY_MS, FakeBinance
from tradeguard.adapters.exchange_download import make_exchange

# The fake's default clock: 2024-01-10 12:30 UTC, so the 12:00 hourly candle is still forming.
FAKE_NOW_MS = int(datetime(2024, 1, 10, 12, 30, tzinfo=UTC).timestamp() * 1000)

# ccxt settings for talking to a local fake: fail fast, no client-side throttling.
FAKE_CCXT_CONFIG = {"timeout": 2000, "enableRateLimit": False}


@pytest.fixture
def fake_binance() -> Iterator[FakeBinance]:
    """A running FakeBinance with BTCUSDT and ETHUSDT candles over the 400 days before FAKE_NOW_MS."""
    with FakeBinance(now_ms=FAKE_NOW_MS, start_ms=FAKE_NOW_MS - 400 * DAY_MS) as fake:
        yield fake


@pytest.fixture
def fake_binance_client(fake_binance: FakeBinance) -> Iterator[ccxt.Exchange]:
    """ccxt's binance (spot markets only) with every API host pointed at ``fake_binance``."""
    exchange = make_exchange("binance", api_url=fake_binance.url, config=FAKE_CCXT_CONFIG)
    yield exchange
    exchange.close()
