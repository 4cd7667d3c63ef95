"""Live external sources against local fakes: response shapes, publication times, retries, timeouts, cache."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.fakes.fake_binance import DAY_MS, HOUR_MS, FakeBinance
from tests.fakes.fake_external import FNG_PATH, FRED_PATH, GLOBAL_PATH, FakeExternal, add_binance_futures
from tradeguard.adapters.sources.base import SourceError
from tradeguard.adapters.sources.cache import CachedSource
from tradeguard.adapters.sources.coingecko import BtcDominanceFetcher
from tradeguard.adapters.sources.fear_greed import FearGreedFetcher
from tradeguard.adapters.sources.fred import FredFetcher
from tradeguard.adapters.sources.funding import FundingRateFetcher, perpetual_symbol
from tradeguard.adapters.sources.http import HttpPolicy
from tradeguard.adapters.status import Backoff
from tradeguard.core.external import ExternalSeries

NOW = datetime(2024, 4, 17, 12, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
FNG_DAYS = {"2024-04-14": 30, "2024-04-15": 23, "2024-04-16": 18, "2024-04-17": 41}


def ns(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


def unix_s(text: str) -> int:
    return ns(text) // 1_000_000_000


class Sleeps:
    """An injectable async sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def policy(sleeps: Sleeps) -> HttpPolicy:
    return HttpPolicy(
        timeout_s=2.0, attempts=3, backoff=Backoff(base_s=0.5, cap_s=4.0, jitter=False), sleep=sleeps
    )


@pytest.fixture
def fake() -> Iterator[FakeExternal]:
    with FakeExternal() as server:
        server.set_fear_greed([(unix_s(day), value) for day, value in FNG_DAYS.items()])
        yield server


def lookup(series: ExternalSeries, when: str) -> float:
    values, _ = series.lookup(np.array([ns(when)]))
    return float(values[0])


# -- shapes and publication times ----------------------------------------------------------------------


def test_fear_greed_parses_alternative_me_and_publishes_next_day(fake, policy):
    series = asyncio.run(FearGreedFetcher(fake.url, limit=3, policy=policy).fetch(NOW))

    assert series.name == "fear_greed"
    assert series.values.tolist() == [23.0, 18.0, 41.0]
    assert series.observed_at.tolist() == [ns("2024-04-15"), ns("2024-04-16"), ns("2024-04-17")]
    assert series.available_at.tolist() == [ns("2024-04-16"), ns("2024-04-17"), ns("2024-04-18")]
    assert [r.params for r in fake.requests_to(FNG_PATH)] == [{"limit": "3", "format": "json"}]


def test_fear_greed_value_is_never_available_before_its_publication(fake, policy):
    series = asyncio.run(FearGreedFetcher(fake.url, policy=policy).fetch(NOW))

    assert lookup(series, "2024-04-16T23:59:59") == 23.0  # 04-16's value is not out yet
    assert lookup(series, "2024-04-17T00:00") == 18.0
    assert lookup(series, "2024-04-17T12:00") == 18.0  # today's 41 is used from tomorrow
    assert np.isnan(lookup(series, "2024-04-14T23:00"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Fear and Greed Index", "data": [], "metadata": {"error": "Bad limit"}}, "Bad limit"),
        ({"name": "Fear and Greed Index", "data": [], "metadata": {"error": None}}, "no values"),
        ({"data": [{"value": "23"}], "metadata": {"error": None}}, "unexpected response shape"),
        ([1, 2], "unexpected response shape"),
    ],
)
def test_fear_greed_rejects_errors_and_other_shapes(fake, policy, body, message):
    fake.routes[FNG_PATH] = lambda _params: (200, body, {})
    with pytest.raises(SourceError, match=message):
        asyncio.run(FearGreedFetcher(fake.url, policy=policy).fetch(NOW))


def test_btc_dominance_is_published_at_updated_at_and_history_grows(fake, policy):
    fetcher = BtcDominanceFetcher(fake.url, policy=policy)
    first, second = unix_s("2024-04-17T11:50"), unix_s("2024-04-17T11:58")

    async def three_fetches() -> list[ExternalSeries]:
        fake.set_global(52.1, first)
        a = await fetcher.fetch(NOW)
        b = await fetcher.fetch(NOW)  # same updated_at: deduplicated
        fake.set_global(52.4, second)
        return [a, b, await fetcher.fetch(NOW)]

    a, b, c = asyncio.run(three_fetches())
    assert a.values.tolist() == b.values.tolist() == [52.1]
    assert c.values.tolist() == [52.1, 52.4]
    assert c.available_at.tolist() == c.observed_at.tolist() == [first * 10**9, second * 10**9]
    assert np.isnan(lookup(c, "2024-04-17T11:49:59"))
    assert lookup(c, "2024-04-17T11:57") == 52.1
    assert len(fake.requests_to(GLOBAL_PATH)) == 3


def test_btc_dominance_rejects_other_shapes(fake, policy):
    fake.routes[GLOBAL_PATH] = lambda _params: (200, {"data": {"updated_at": 1713312000}}, {})
    with pytest.raises(SourceError, match="btc_dominance: unexpected response shape"):
        asyncio.run(BtcDominanceFetcher(fake.url, policy=policy).fetch(NOW))


@pytest.mark.parametrize("date_header", ["observation_date", "DATE"])
def test_fred_vix_csv_drops_missing_values_and_publishes_next_day(fake, policy, date_header):
    rows = [("2024-04-11", "14.91"), ("2024-04-12", "17.31"), ("2024-04-15", "."), ("2024-04-16", "18.40")]
    fake.set_fred("VIXCLS", [*rows, ("2024-04-17", "")], date_header=date_header)

    series = asyncio.run(FredFetcher("vix", fake.url, policy=policy).fetch(NOW))

    assert series.name == "vix"
    assert series.values.tolist() == [14.91, 17.31, 18.40]
    assert series.observed_at.tolist() == [ns("2024-04-11"), ns("2024-04-12"), ns("2024-04-16")]
    assert series.available_at.tolist() == [ns("2024-04-12"), ns("2024-04-13"), ns("2024-04-17")]
    assert lookup(series, "2024-04-16T23:59") == 17.31
    assert fake.requests_to(FRED_PATH)[0].params == {"id": "VIXCLS", "cosd": "2023-12-19"}  # 120 days back


def test_fred_dollar_index_follows_the_weekly_h10_release(fake, policy):
    fake.set_fred("DTWEXBGS", [("2024-04-11", "122.9"), ("2024-04-12", "123.6"), ("2024-04-15", "123.9")])

    series = asyncio.run(FredFetcher("dxy", fake.url, policy=policy).fetch(NOW))

    assert series.name == "dxy"
    # Thursday and Friday come out with Monday 04-15's release, Monday 04-15 with 04-22's.
    assert series.available_at.tolist() == [ns("2024-04-16"), ns("2024-04-16"), ns("2024-04-23")]
    assert np.isnan(lookup(series, "2024-04-15T23:59"))  # nothing released yet
    assert lookup(series, NOW.isoformat()) == 123.6
    assert fake.requests_to(FRED_PATH)[0].params["id"] == "DTWEXBGS"


def test_fred_rejects_a_page_that_is_not_the_series_csv(fake, policy):
    fake.routes[FRED_PATH] = lambda _params: (200, "<html><body>Maintenance</body></html>", {})
    with pytest.raises(SourceError, match="vix: FRED VIXCLS: unexpected CSV header"):
        asyncio.run(FredFetcher("vix", fake.url, policy=policy).fetch(NOW))


def test_every_fetcher_has_a_status_named_after_its_source():
    fetchers = [FearGreedFetcher(), BtcDominanceFetcher(), FredFetcher("vix"), FredFetcher("dxy")]
    assert [(f.name, f.status.name) for f in fetchers] == [
        ("fear_greed", "fear_greed"),
        ("btc_dominance", "btc_dominance"),
        ("vix", "vix"),
        ("dxy", "dxy"),
    ]
    assert fetchers[0].url == "https://api.alternative.me/fng/"
    assert fetchers[1].url == "https://api.coingecko.com/api/v3/global"
    assert fetchers[2].url == "https://fred.stlouisfed.org/graph/fredgraph.csv"


# -- retries, timeouts, errors ---------------------------------------------------------------------------


def test_5xx_is_retried_with_backoff_then_succeeds(fake, policy, sleeps):
    fake.fail_next(2, 503)
    series = asyncio.run(FearGreedFetcher(fake.url, policy=policy).fetch(NOW))

    assert len(series.values) == 4
    assert [r.status for r in fake.requests_to(FNG_PATH)] == [503, 503, 200]
    assert sleeps.calls == [0.5, 1.0]


def test_429_honours_retry_after(fake, policy, sleeps):
    fake.fail_next(1, 429, retry_after="7")
    asyncio.run(BtcDominanceFetcher(fake.url, policy=policy).fetch(NOW))

    assert [r.status for r in fake.requests_to(GLOBAL_PATH)] == [429, 200]
    assert sleeps.calls == [7.0]


def test_retry_after_beyond_the_limit_fails_at_once(fake, policy, sleeps):
    fake.fail_next(1, 429, retry_after="3600")
    with pytest.raises(SourceError, match=r"HTTP 429 .*retry after 3600s \(more than 60s\)"):
        asyncio.run(BtcDominanceFetcher(fake.url, policy=policy).fetch(NOW))
    assert sleeps.calls == []
    assert len(fake.requests) == 1


def test_persistent_5xx_fails_with_a_one_line_message(fake, policy, sleeps):
    fake.fail_next(5, 500)
    with pytest.raises(SourceError) as info:
        asyncio.run(FredFetcher("vix", fake.url, policy=policy).fetch(NOW))

    message = str(info.value)
    assert message.startswith(f"vix: GET {fake.url}/graph/fredgraph.csv?id=VIXCLS")
    assert "failed after 3 attempt(s): HTTP 500" in message
    assert "\n" not in message
    assert len(fake.requests) == 3 and len(sleeps.calls) == 2


def test_timeouts_are_retried_then_reported(fake, sleeps):
    fake.delay_next(3, 1.0)
    policy = HttpPolicy(timeout_s=0.2, attempts=3, backoff=Backoff(jitter=False), sleep=sleeps)
    with pytest.raises(
        SourceError, match=r"fear_greed: GET .*/fng/.* failed after 3 attempt\(s\): timed out after 0.2s"
    ):
        asyncio.run(FearGreedFetcher(fake.url, policy=policy).fetch(NOW))
    assert sleeps.calls == [1.0, 2.0]


def test_a_timeout_then_an_answer_succeeds(fake, sleeps):
    fake.delay_next(1, 1.0)
    policy = HttpPolicy(timeout_s=0.2, attempts=2, backoff=Backoff(jitter=False), sleep=sleeps)
    series = asyncio.run(FearGreedFetcher(fake.url, policy=policy).fetch(NOW))
    assert len(series.values) == 4 and len(sleeps.calls) == 1


def test_other_4xx_are_not_retried(fake, policy, sleeps):
    with pytest.raises(SourceError, match=r"dxy: GET .*id=DTWEXBGS.* failed: HTTP 404 <html>"):
        asyncio.run(FredFetcher("dxy", fake.url, policy=policy).fetch(NOW))  # the fake has no DTWEXBGS
    assert len(fake.requests) == 1
    assert sleeps.calls == []


def test_connection_refused_is_retried(policy, sleeps):
    with FakeExternal() as gone:
        url = gone.url
    with pytest.raises(SourceError, match=r"failed after 3 attempt\(s\): connection failed \(ConnectError"):
        asyncio.run(FearGreedFetcher(url, policy=policy).fetch(NOW))
    assert len(sleeps.calls) == 2


# -- cache -----------------------------------------------------------------------------------------------


def test_cache_reuses_the_series_within_ttl(fake, policy):
    cache = CachedSource(FearGreedFetcher(fake.url, policy=policy), ttl_s=300, max_age_s=3600)

    async def gets() -> list[ExternalSeries | None]:
        return [await cache.get(NOW + timedelta(seconds=s)) for s in (0, 299, 300)]

    first, within, after = asyncio.run(gets())
    assert first is within and after is not None and after is not first
    assert len(fake.requests_to(FNG_PATH)) == 2
    assert cache.fetcher.status.last_success == NOW + timedelta(seconds=300)


def test_cache_serves_the_last_good_series_within_max_age_then_none(fake, policy):
    fetcher = FearGreedFetcher(fake.url, policy=policy)
    cache = CachedSource(fetcher, ttl_s=60, max_age_s=3600, failure_backoff=Backoff(base_s=0.0, jitter=False))

    async def gets() -> list[ExternalSeries | None]:
        good = await cache.get(NOW)
        fake.fail_next(100, 500)
        return [
            good,
            await cache.get(NOW + timedelta(seconds=120)),
            await cache.get(NOW + timedelta(hours=1)),
        ]

    good, stale, expired = asyncio.run(gets())
    assert good is not None and stale is good
    assert expired is None
    assert fetcher.status.consecutive_errors == 2 and fetcher.status.errors_total == 2
    assert "HTTP 500" in (fetcher.status.last_error or "")
    assert fetcher.status.last_success == NOW and not fetcher.status.reachable
    assert cache.age_s(NOW + timedelta(hours=1)) is None


def test_cache_waits_out_its_failure_backoff_before_trying_again(fake, policy):
    cache = CachedSource(
        FearGreedFetcher(fake.url, policy=policy), 60, 3600, failure_backoff=Backoff(base_s=30, jitter=False)
    )
    fake.fail_next(3, 503)

    async def gets() -> list[ExternalSeries | None]:
        return [await cache.get(NOW + timedelta(seconds=s)) for s in (0, 10, 31)]

    failed, waiting, retried = asyncio.run(gets())
    assert failed is None and waiting is None and retried is not None
    assert [r.status for r in fake.requests_to(FNG_PATH)] == [503, 503, 503, 200]


def test_concurrent_callers_share_one_request(fake, policy):
    fake.delay_next(1, 0.3)
    cache = CachedSource(FearGreedFetcher(fake.url, policy=policy), ttl_s=60, max_age_s=3600)

    async def many() -> list[ExternalSeries | None]:
        return await asyncio.gather(*(cache.get(NOW) for _ in range(5)))

    results = asyncio.run(many())
    assert all(r is results[0] for r in results) and results[0] is not None
    assert len(fake.requests) == 1


def test_cache_age_is_the_age_of_the_newest_published_value(fake, policy):
    cache = CachedSource(FearGreedFetcher(fake.url, policy=policy), ttl_s=60, max_age_s=3600)
    assert cache.age_s(NOW) is None
    asyncio.run(cache.get(NOW))
    assert cache.age_s(NOW) == 12 * 3600  # 04-16's value, published 04-17 00:00
    assert cache.fetcher.status.age_s(NOW) == 0


def test_cache_rejects_inconsistent_limits(fake):
    with pytest.raises(ValueError, match="ttl_s <= max_age_s"):
        CachedSource(FearGreedFetcher(fake.url), ttl_s=600, max_age_s=60)


# -- funding through ccxt --------------------------------------------------------------------------------

FUNDING_TIMES = [NOW_MS - NOW_MS % (8 * HOUR_MS) - i * 8 * HOUR_MS for i in range(30)]


@pytest.fixture
def fake_futures() -> Iterator[FakeBinance]:
    with FakeBinance(now_ms=NOW_MS, start_ms=NOW_MS - 10 * DAY_MS) as fake_binance:
        rows = [(t, f"{0.0001 * (1 + i % 3):.8f}") for i, t in enumerate(FUNDING_TIMES)]
        add_binance_futures(fake_binance, {"BTCUSDT": rows, "ETHUSDT": rows})
        yield fake_binance


def fetch_funding(fetcher: FundingRateFetcher) -> ExternalSeries:
    async def run() -> ExternalSeries:
        try:
            return await fetcher.fetch(NOW)
        finally:
            await fetcher.close()

    return asyncio.run(run())


def test_perpetual_symbol():
    assert perpetual_symbol("BTC/USDT") == "BTC/USDT:USDT"
    assert perpetual_symbol("ETH/USDC:USDC") == "ETH/USDC:USDC"


def test_funding_rates_through_ccxt_are_available_at_funding_time(fake_futures, policy):
    fetcher = FundingRateFetcher("BTC/USDT", api_url=fake_futures.url, policy=policy)
    series = fetch_funding(fetcher)

    in_window = sorted(t for t in FUNDING_TIMES if t >= NOW_MS - 7 * DAY_MS)
    assert series.name == "funding_rate" and fetcher.status.name == "funding_rate"
    assert series.observed_at.tolist() == series.available_at.tolist() == [t * 10**6 for t in in_window]
    assert series.values[-1] == 0.0001  # the latest settlement, 2024-04-17 08:00
    assert series.available_at[-1] == ns("2024-04-17T08:00")
    paths = [r.path for r in fake_futures.requests]
    assert paths == ["/fapi/v1/exchangeInfo", "/fapi/v1/fundingRate"]  # no spot or inverse host
    assert fake_futures.requests[-1].params == {
        "symbol": "BTCUSDT",
        "startTime": str(NOW_MS - 7 * DAY_MS),
        "endTime": str(NOW_MS),
        "limit": "200",
    }


def test_funding_retries_5xx(fake_futures, policy, sleeps):
    fake_futures.fail_next(1, 503, path="/fapi/v1/fundingRate")
    series = fetch_funding(FundingRateFetcher("ETH/USDT", api_url=fake_futures.url, policy=policy))
    assert len(series.values) == 21
    assert sleeps.calls == [0.5]


def test_funding_for_an_unlisted_pair_fails_without_retry(fake_futures, policy, sleeps):
    with pytest.raises(SourceError, match="DOGE/USDT:USDT failed: binance does not have market symbol"):
        fetch_funding(FundingRateFetcher("DOGE/USDT", api_url=fake_futures.url, policy=policy))
    assert sleeps.calls == []


def test_funding_gives_up_after_the_policy_attempts(fake_futures, policy, sleeps):
    fake_futures.fail_next(10, 502, path="/fapi/v1/exchangeInfo")
    with pytest.raises(SourceError, match=r"binance BTC/USDT:USDT failed after 3 attempt\(s\)"):
        fetch_funding(FundingRateFetcher("BTC/USDT", api_url=fake_futures.url, policy=policy))
    assert len(sleeps.calls) == 2
