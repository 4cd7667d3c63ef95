"""Pytest fixture for the fake Binance WebSocket stream. Bind it, and the REST fake it draws its candles
from, in a test module by assignment::

    from tests.fakes import fixtures, ws_fixtures

    fake_binance = fixtures.fake_binance
    fake_binance_ws = ws_fixtures.fake_binance_ws
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fake_binance import FakeBinance
from tests.fakes.fake_binance_ws import FakeBinanceWs


@pytest.fixture
def fake_binance_ws(fake_binance: FakeBinance) -> Iterator[FakeBinanceWs]:
    """A running FakeBinanceWs whose klines are ``fake_binance``'s candles."""
    with FakeBinanceWs(fake_binance) as fake:
        yield fake
