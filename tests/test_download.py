"""`download-data` through the real ccxt binance client against a local fake Binance (no internet)."""

from __future__ import annotations

import time
from pathlib import Path

import ccxt
import pandas as pd
import pytest

from tests.fakes import fixtures
from tests.fakes.fake_binance import DAY_MS, HOUR_MS, FakeBinance
from tests.fakes.fixtures import FAKE_NOW_MS
from tradeguard.adapters.candle_files import load_candles, read_candle_file, write_candles
from tradeguard.adapters.exchange_download import (
    DownloadResult,
    RetryPolicy,
    download_pair,
    download_to_dir,
    make_exchange,
    market_type,
)
from tradeguard.cli.main import main
from tradeguard.core.candles import COLUMNS, Gap
from tradeguard.errors import ExchangeError, InputError

fake_binance = fixtures.fake_binance
fake_binance_client = fixtures.fake_binance_client

NO_WAIT = RetryPolicy(attempts=3, backoff_s=0.0)
CURRENT_HOUR_MS = FAKE_NOW_MS // HOUR_MS * HOUR_MS  # open time of the candle still forming at FAKE_NOW_MS


def open_ms(df: pd.DataFrame) -> list[int]:
    return (df["date"].astype("int64") // 1_000_000).tolist()


def expected_frame(fake: FakeBinance, symbol: str, times: list[int]) -> pd.DataFrame:
    """What the fake's klines for these open times look like as Freqtrade candles."""
    rows = [fake.kline(symbol, "1h", t) for t in times]
    return pd.DataFrame(
        {
            "date": pd.to_datetime(times, unit="ms", utc=True).astype("datetime64[ns, UTC]"),
            **{col: [float(r[i]) for r in rows] for i, col in enumerate(COLUMNS[1:], start=1)},
        }
    )


def download(
    client: ccxt.Exchange,
    data_dir: Path,
    hours: int,
    *,
    pair: str = "BTC/USDT",
    now_ms: int = FAKE_NOW_MS,
    retry: RetryPolicy = NO_WAIT,
) -> DownloadResult:
    return download_to_dir(
        client, pair, "1h", since_ms=now_ms - hours * HOUR_MS, now_ms=now_ms, data_dir=data_dir, retry=retry
    )


def test_client_is_pointed_at_the_fake_and_loads_spot_markets_only(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange
) -> None:
    api = fake_binance_client.urls["api"]
    assert all(url.startswith(fake_binance.url + "/") for url in api.values())
    assert api["public"] == fake_binance.url + "/api/v3"
    assert fake_binance_client.options["fetchMarkets"]["types"] == ["spot"]
    markets = fake_binance_client.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    assert markets["BTC/USDT"]["limits"]["cost"]["min"] == 5.0
    assert [r.path for r in fake_binance.requests] == ["/api/v3/exchangeInfo"]


def test_pagination_fetches_every_closed_candle_exactly_once(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange
) -> None:
    # 2500 closed hourly candles before the forming one: 1000 + 1000 + 500 (+ the forming candle)
    since = FAKE_NOW_MS - 2500 * HOUR_MS
    df = download_pair(fake_binance_client, "BTC/USDT", "1h", since, FAKE_NOW_MS, retry=NO_WAIT)

    first = CURRENT_HOUR_MS - 2500 * HOUR_MS
    expected_times = list(range(first, CURRENT_HOUR_MS, HOUR_MS))
    assert open_ms(df) == expected_times
    pd.testing.assert_frame_equal(df, expected_frame(fake_binance, "BTCUSDT", expected_times))
    calls = fake_binance.klines_requests()
    assert [int(c["startTime"]) for c in calls] == [first, first + 1000 * HOUR_MS, first + 2000 * HOUR_MS]
    assert {(c["symbol"], c["interval"], c["limit"]) for c in calls} == {("BTCUSDT", "1h", "1000")}


@pytest.mark.parametrize("now_offset_ms", [0, 1, 30 * 60_000, HOUR_MS - 1])
def test_the_candle_still_forming_is_dropped(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange, now_offset_ms: int
) -> None:
    now = CURRENT_HOUR_MS + now_offset_ms
    fake_binance.now_ms = now
    df = download_pair(fake_binance_client, "ETH/USDT", "1h", now - 5 * HOUR_MS, now, retry=NO_WAIT)

    assert fake_binance.open_times("ETHUSDT", "1h")[-1] == CURRENT_HOUR_MS  # the fake does serve it
    assert open_ms(df) == [CURRENT_HOUR_MS - h * HOUR_MS for h in range(5, 0, -1)]


def test_merge_keeps_old_rows_adds_new_ones_and_new_rows_win(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange, tmp_path: Path
) -> None:
    # the stored file: 48 candles ending 10 hours ago, with a wrong close price everywhere
    old_times = list(range(CURRENT_HOUR_MS - 58 * HOUR_MS, CURRENT_HOUR_MS - 10 * HOUR_MS, HOUR_MS))
    stored = expected_frame(fake_binance, "BTCUSDT", old_times).assign(close=1.0)
    write_candles(stored, tmp_path, "BTC/USDT", "1h")

    result = download(fake_binance_client, tmp_path, hours=24)

    df = load_candles(tmp_path, "BTC/USDT", "1h")
    all_times = list(range(old_times[0], CURRENT_HOUR_MS, HOUR_MS))
    assert open_ms(df) == all_times
    assert (result.fetched, result.rows, result.gaps) == (24, 58, ())
    assert (result.first, result.last) == (df["date"].iat[0], df["date"].iat[-1])
    # rows older than the download keep the stored values; downloaded dates take the exchange's
    downloaded_from = CURRENT_HOUR_MS - 24 * HOUR_MS
    old = df[df["date"] < pd.Timestamp(downloaded_from, unit="ms", tz="UTC")]
    assert len(old) == 34 and (old["close"] == 1.0).all()
    new = df[df["date"] >= pd.Timestamp(downloaded_from, unit="ms", tz="UTC")].reset_index(drop=True)
    pd.testing.assert_frame_equal(new, expected_frame(fake_binance, "BTCUSDT", all_times[34:]))

    again = download(fake_binance_client, tmp_path, hours=24)
    assert (again.fetched, again.rows) == (24, 58)
    pd.testing.assert_frame_equal(load_candles(tmp_path, "BTC/USDT", "1h"), df)


def test_written_file_is_freqtrade_feather(fake_binance_client: ccxt.Exchange, tmp_path: Path) -> None:
    result = download(fake_binance_client, tmp_path, hours=30, pair="ETH/USDT")

    assert result.path == tmp_path / "ETH_USDT-1h.feather"
    raw = pd.read_feather(result.path)
    assert list(raw.columns) == ["date", "open", "high", "low", "close", "volume"]
    assert str(raw["date"].dtype) == "datetime64[ns, UTC]"
    assert all(str(raw[c].dtype) == "float64" for c in COLUMNS[1:])
    assert len(raw) == 30 and raw["date"].is_monotonic_increasing
    pd.testing.assert_frame_equal(load_candles(tmp_path, "ETH/USDT", "1h"), raw)


def test_parquet_format_is_written_where_freqtrade_looks(
    fake_binance_client: ccxt.Exchange, tmp_path: Path
) -> None:
    result = download_to_dir(
        fake_binance_client,
        "BTC/USDT",
        "1h",
        since_ms=FAKE_NOW_MS - 3 * HOUR_MS,
        now_ms=FAKE_NOW_MS,
        data_dir=tmp_path,
        fmt="parquet",
        retry=NO_WAIT,
    )
    assert result.path == tmp_path / "BTC_USDT-1h.parquet"
    assert len(read_candle_file(result.path)) == 3


def test_gaps_in_exchange_data_are_reported_not_filled(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange, tmp_path: Path
) -> None:
    hole_start = CURRENT_HOUR_MS - 20 * HOUR_MS
    fake_binance.drop_candles(hole_start, hole_start + 3 * HOUR_MS, symbol="BTCUSDT")

    result = download(fake_binance_client, tmp_path, hours=48)

    hole = pd.Timestamp(hole_start, unit="ms", tz="UTC")
    assert result.gaps == (Gap(start=hole, end=hole + pd.Timedelta(hours=2), missing=3),)
    assert (result.fetched, result.rows) == (45, 45)
    df = load_candles(tmp_path, "BTC/USDT", "1h")
    assert not df["date"].between(hole, hole + pd.Timedelta(hours=2)).any()


@pytest.mark.parametrize("status", [500, 503, 429, 418])
def test_temporary_failures_are_retried_with_backoff(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange, status: int
) -> None:
    sleeps: list[float] = []
    retry = RetryPolicy(attempts=3, backoff_s=0.5, sleep=sleeps.append)
    fake_binance.fail_next(1, status=status, path="/api/v3/klines")

    df = download_pair(
        fake_binance_client, "BTC/USDT", "1h", FAKE_NOW_MS - 10 * HOUR_MS, FAKE_NOW_MS, retry=retry
    )

    assert len(df) == 10
    assert sleeps == [0.5]
    statuses = [r.status for r in fake_binance.requests if r.path == "/api/v3/klines"]
    assert statuses == [status, 200]


def test_failures_while_loading_markets_are_retried(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange
) -> None:
    fake_binance.fail_next(2, status=502, path="/api/v3/exchangeInfo")
    df = download_pair(
        fake_binance_client, "BTC/USDT", "1h", FAKE_NOW_MS - 2 * HOUR_MS, FAKE_NOW_MS, retry=NO_WAIT
    )
    assert len(df) == 2


def test_persistent_failure_becomes_exchange_error(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange
) -> None:
    sleeps: list[float] = []
    fake_binance.fail_next(10, status=500, path="/api/v3/klines")
    expected = r"fetching 1h candles of BTC/USDT: still failing after 3 attempts"
    with pytest.raises(ExchangeError, match=expected):
        download_pair(
            fake_binance_client,
            "BTC/USDT",
            "1h",
            FAKE_NOW_MS - 2 * HOUR_MS,
            FAKE_NOW_MS,
            retry=RetryPolicy(attempts=3, backoff_s=1.0, sleep=sleeps.append),
        )
    assert sleeps == [1.0, 2.0]


def test_pair_not_listed_is_an_input_error(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange
) -> None:
    with pytest.raises(InputError, match=r"DOGE/USDT is not listed on binance \(spot markets\)"):
        download_pair(fake_binance_client, "DOGE/USDT", "1h", FAKE_NOW_MS - HOUR_MS, FAKE_NOW_MS)
    assert fake_binance.klines_requests() == []


def test_symbol_rejected_by_the_exchange_is_an_input_error(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange
) -> None:
    fake_binance_client.load_markets()
    del fake_binance.markets["ETHUSDT"]  # delisted after the markets were loaded: klines answers -1121
    with pytest.raises(InputError, match="Invalid symbol"):
        download_pair(
            fake_binance_client, "ETH/USDT", "1h", FAKE_NOW_MS - HOUR_MS, FAKE_NOW_MS, retry=NO_WAIT
        )


def test_unsupported_timeframe_is_an_input_error(fake_binance_client: ccxt.Exchange) -> None:
    with pytest.raises(InputError, match="binance has no 7m candles; it offers 1s, 1m"):
        download_pair(fake_binance_client, "BTC/USDT", "7m", FAKE_NOW_MS - DAY_MS, FAKE_NOW_MS)


def test_nothing_is_written_without_candles(
    fake_binance: FakeBinance, fake_binance_client: ccxt.Exchange, tmp_path: Path
) -> None:
    fake_binance.start_ms = FAKE_NOW_MS  # no history at all
    result = download(fake_binance_client, tmp_path, hours=24)
    assert (result.path, result.fetched, result.rows) == (None, 0, 0)
    assert list(tmp_path.iterdir()) == []


def test_unknown_exchange_id_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"'binanse' is not a ccxt exchange id; did you mean binance"):
        make_exchange("binanse")


def test_futures_pairs_select_swap_markets() -> None:
    assert [market_type(p) for p in ("BTC/USDT", "BTC/USDT:USDT", "BTC/USD:BTC-250328")] == [
        "spot",
        "swap",
        "future",
    ]
    exchange = make_exchange("binance", market_types={"swap"})
    assert exchange.options["defaultType"] == "swap"
    assert exchange.options["fetchMarkets"]["types"] == ["linear", "inverse"]


def test_cli_downloads_every_pair(
    fake_binance: FakeBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time() * 1000)
    fake_binance.now_ms, fake_binance.start_ms = now, now - 10 * DAY_MS

    code = main(
        [
            "download-data",
            "--exchange",
            "binance",
            "--pairs",
            "BTC/USDT,ETH/USDT",
            "--timeframe",
            "1h",
            "--days",
            "2",
            "--data-dir",
            str(tmp_path),
            "--api-url",
            fake_binance.url,
        ]
    )

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, pair, stem in zip(lines, ["BTC/USDT", "ETH/USDT"], ["BTC_USDT", "ETH_USDT"], strict=True):
        path = tmp_path / f"{stem}-1h.feather"
        assert line.startswith(f"{pair}: fetched 48, 48 in file, ")
        assert line.endswith(f", wrote {path}, no gaps")
        assert len(load_candles(tmp_path, pair, "1h")) == 48


def test_cli_reports_gaps(
    fake_binance: FakeBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time() * 1000)
    fake_binance.now_ms, fake_binance.start_ms = now, now - 10 * DAY_MS
    hole = (now // HOUR_MS - 10) * HOUR_MS
    fake_binance.drop_candles(hole, hole + 2 * HOUR_MS)

    code = main(
        [
            "download-data",
            "--pairs",
            "BTC/USDT",
            "--days",
            "1",
            "--data-dir",
            str(tmp_path),
            "--format",
            "csv",
            "--api-url",
            fake_binance.url,
        ]
    )

    assert code == 0
    first, last = pd.Timestamp(hole, unit="ms", tz="UTC"), pd.Timestamp(hole + HOUR_MS, unit="ms", tz="UTC")
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(f", 1 gap(s), 2 candles missing: {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} (2)")
    )
    assert (tmp_path / "BTC_USDT-1h.csv").is_file()


def test_cli_bad_exchange_id_fails_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["download-data", "--exchange", "nosuchexchange", "--pairs", "BTC/USDT", "--data-dir", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err == "tradeguard download-data: error: 'nosuchexchange' is not a ccxt exchange id\n"


def test_cli_unlisted_pair_fails_before_downloading(
    fake_binance: FakeBinance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "download-data",
            "--pairs",
            "BTC/USDT,XYZ/USDT",
            "--data-dir",
            str(tmp_path),
            "--api-url",
            fake_binance.url,
        ]
    )
    assert code == 2
    assert "XYZ/USDT is not listed on binance" in capsys.readouterr().err
    assert fake_binance.klines_requests() == []
    assert list(tmp_path.iterdir()) == []
