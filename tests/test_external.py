"""External context: publication times, point-in-time lookups, missing sources."""

import numpy as np
import pandas as pd
import pytest

from tradeguard.adapters.external_files import load_external, publication_times
from tradeguard.core.config import ExternalConfig
from tradeguard.core.external import ExternalSeries, external_at, external_risk

NS = 1_000_000_000


def ns(text: str) -> int:
    return pd.Timestamp(text).value


def test_daily_value_is_usable_from_the_next_day():
    observed = pd.Series(pd.to_datetime(["2022-06-13"], utc=True))
    assert publication_times(observed, "next_day").iloc[0] == pd.Timestamp("2022-06-14T00:00Z")


@pytest.mark.parametrize(
    ("day", "usable"),
    [
        ("2024-01-05", "2024-01-09"),  # Friday -> released Monday 8th -> Tuesday 00:00 UTC
        ("2024-01-08", "2024-01-16"),  # Monday -> next Monday's release
        ("2024-01-07", "2024-01-09"),  # Sunday
    ],
)
def test_h10_dollar_index_is_weekly(day, usable):
    observed = pd.Series(pd.to_datetime([day], utc=True))
    assert publication_times(observed, "weekly_monday").iloc[0] == pd.Timestamp(usable, tz="UTC")


def test_lookup_never_sees_unpublished_values():
    s = ExternalSeries(
        "fear_greed",
        np.array([ns("2024-01-01"), ns("2024-01-02")]),
        np.array([ns("2024-01-02"), ns("2024-01-03")]),
        np.array([10.0, 90.0]),
    )
    values, published = s.lookup(np.array([ns("2024-01-01T23:59"), ns("2024-01-02"), ns("2024-01-02T23:00")]))
    assert np.isnan(values[0]) and published[0] == -1
    assert values[1:].tolist() == [10.0, 10.0]


def test_stale_values_count_as_missing():
    s = ExternalSeries("vix", np.array([ns("2024-01-01")]), np.array([ns("2024-01-02")]), np.array([30.0]))
    at = external_at(
        {"vix": s}, np.array([ns("2024-01-05"), ns("2024-01-20")]), ExternalConfig(max_age_days=7)
    )
    assert at.values["vix"][0] == 30.0 and np.isnan(at.values["vix"][1])
    assert at.age_s["vix"].tolist() == [3 * 86400, 18 * 86400]


def test_external_risk_averages_known_sources_and_reports_coverage():
    cfg = ExternalConfig()
    at = external_at({}, np.array([0]), cfg)
    risk, share = external_risk(at, cfg)
    assert np.isnan(risk) and share == 0.0
    at.values.update({"fear_greed": np.array([10.0]), "vix": np.array([40.0])})
    risk, share = external_risk(at, cfg)
    assert risk[0] == pytest.approx((0.8 + 1.0) / 2) and share[0] == pytest.approx(2 / 5)


def test_missing_and_broken_sources_never_crash(tmp_path):
    (tmp_path / "vix_daily.csv").write_text("oops\n1,2\n")
    (tmp_path / "fear_greed_index_daily.csv").write_text(
        "date,fng_value,fng_classification\n2024-01-01,20,Extreme Fear\n"
    )
    load = load_external(tmp_path)
    assert sorted(load.series) == ["fear_greed"]
    assert any("vix" in w for w in load.warnings)
    assert load_external(tmp_path / "nope").warnings


def test_published_at_column_overrides_the_rule(tmp_path):
    (tmp_path / "vix.csv").write_text("date,value,published_at\n2024-01-02,14.0,2024-01-02T21:15:00Z\n")
    s = load_external(tmp_path).series["vix"]
    assert s.available_at[0] == ns("2024-01-02T21:15Z")


def test_shared_external_files_load(shared_data):
    load = load_external(shared_data / "external", shared_data / "binance", "BTC/USDT")
    assert {"fear_greed", "vix", "dxy", "funding_rate"} <= set(load.series)
    vix = load.series["vix"]
    assert np.isfinite(vix.values).all()  # holiday blanks dropped, not filled
    funding = load.series["funding_rate"]
    assert (funding.available_at == funding.observed_at).all()


def test_daily_last_makes_changes_count_days_not_updates():
    minutes = np.array(
        [
            ns("2024-01-01T00:05"),
            ns("2024-01-01T12:00"),
            ns("2024-01-01T23:55"),
            ns("2024-01-02T08:00"),
            ns("2024-01-03T09:00"),
        ]
    )
    s = ExternalSeries("btc_dominance", minutes, minutes, np.array([50.0, 51.0, 52.0, 53.0, 55.0]))
    daily = s.daily_last()
    assert daily.values.tolist() == [52.0, 53.0, 55.0]
    assert daily.available_at.tolist() == [minutes[2], minutes[3], minutes[4]]
    change = daily.pct_change(1, "chg")
    assert change.values[2] == pytest.approx((55 / 53 - 1) * 100)
