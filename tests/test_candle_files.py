"""Freqtrade data-directory files: naming, formats, round-trips, clear errors."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.synthetic import candles_from_closes, random_walk
from tradeguard.adapters.candle_files import (
    FORMATS,
    available_pairs,
    candle_stem,
    load_candles,
    parse_pair,
    read_candle_file,
    write_candles,
)
from tradeguard.errors import DataFormatError, DataNotFoundError, InputError


@pytest.mark.parametrize(
    ("pair", "tf", "stem"),
    [
        ("BTC/USDT", "1h", "BTC_USDT-1h"),
        ("BTC/USDT:USDT", "1h", "BTC_USDT_USDT-1h-futures"),
        ("1000SHIB/USDT", "5m", "1000SHIB_USDT-5m"),
    ],
)
def test_freqtrade_file_names(pair, tf, stem):
    assert candle_stem(pair, tf) == stem


def test_bad_pair_is_an_input_error():
    with pytest.raises(InputError, match="ccxt form"):
        parse_pair("BTCUSDT")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(FORMATS), n=st.integers(1, 50), seed=st.integers(0, 1000), futures=st.booleans())
def test_write_then_read_round_trips(tmp_path_factory, fmt, n, seed, futures):
    folder = tmp_path_factory.mktemp("data")
    pair = "ETH/USDT:USDT" if futures else "ETH/USDT"
    df = candles_from_closes(random_walk(n, seed=seed))
    path = write_candles(df, folder, pair, "1h", fmt)
    assert path.parent == (folder / "futures" if futures else folder)
    back = load_candles(folder, pair, "1h")
    pd.testing.assert_frame_equal(back, df, check_exact=fmt != "csv", rtol=1e-12)


def test_our_feather_is_what_freqtrade_reads(tmp_path):
    df = candles_from_closes(np.arange(1.0, 5.0))
    path = write_candles(df, tmp_path, "BTC/USDT", "1h")
    raw = pd.read_feather(path)
    assert list(raw.columns) == ["date", "open", "high", "low", "close", "volume"]
    assert str(raw["date"].dtype) == "datetime64[ns, UTC]"


def test_freqtrade_json_with_ms_timestamps(tmp_path):
    rows = [[1704067200000, 1, 2, 0.5, 1.5, 10], [1704070800000, 1.5, 2, 1, 1.8, 12]]
    (tmp_path / "SOL_USDT-1h.json.gz").write_bytes(gzip.compress(json.dumps(rows).encode()))
    df = load_candles(tmp_path, "SOL/USDT", "1h")
    assert df["date"].iloc[1] == pd.Timestamp("2024-01-01T01:00Z") and df["close"].iloc[1] == 1.8


def test_plain_csv_with_iso_or_epoch_dates(tmp_path):
    (tmp_path / "ADA_USDT-1h.csv").write_text(
        "timestamp,open,high,low,close,volume\n1704067200,1,2,0.5,1.5,10\n"
    )
    assert load_candles(tmp_path, "ADA/USDT", "1h")["date"].iloc[0] == pd.Timestamp("2024-01-01T00:00Z")
    (tmp_path / "XRP_USDT-1h.csv").write_text(
        "date,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1.5,10\n"
    )
    assert load_candles(tmp_path, "XRP/USDT", "1h")["date"].iloc[0] == pd.Timestamp("2024-01-01T00:00Z")


def test_missing_pair_names_what_is_there(tmp_path):
    write_candles(candles_from_closes(np.ones(2)), tmp_path, "BTC/USDT", "1h")
    with pytest.raises(DataNotFoundError, match=r"pairs with 1h data there: BTC/USDT"):
        load_candles(tmp_path, "DOGE/USDT", "1h")
    assert available_pairs(tmp_path, "1h") == ["BTC/USDT"]


def test_corrupt_file_is_a_format_error(tmp_path):
    (tmp_path / "BTC_USDT-1h.feather").write_bytes(b"not a feather file")
    with pytest.raises(DataFormatError, match=r"BTC_USDT-1h\.feather"):
        load_candles(tmp_path, "BTC/USDT", "1h")
    (tmp_path / "BAD_USDT-1h.csv").write_text("date,open\n2024-01-01,1\n")
    with pytest.raises(DataFormatError, match="lack column"):
        read_candle_file(tmp_path / "BAD_USDT-1h.csv")


def test_prefixed_export_names_are_found(shared_data):
    df = load_candles(shared_data / "binance", "BTC/USDT:USDT", "1h")
    assert len(df) > 50_000 and df["date"].is_monotonic_increasing
