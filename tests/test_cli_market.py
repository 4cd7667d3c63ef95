"""`tradeguard assess` and `tradeguard history` end to end: contract fields, outputs, bad input."""

import json

import pandas as pd
import pytest

from tests.synthetic import candles_from_closes, random_walk
from tradeguard.adapters.candle_files import write_candles
from tradeguard.cli.main import main

CONTRACT = {
    "safe_to_trade",
    "risk_score",
    "risk_class",
    "regime",
    "specialist_regime",
    "volatility",
    "volatility_classification",
    "risk_confidence",
    "trend_classification",
    "momentum_classification",
    "reasoning",
    "blocked_by",
    "risk_breakdown",
    "event_flags",
    "recommendation",
    "fear_greed_index",
    "btc_dominance",
    "funding_rate",
    "vix",
    "dxy",
    "pair",
    "timeframe",
    "as_of",
    "data_age_s",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_candles(candles_from_closes(random_walk(1600, seed=4)), folder, "BTC/USDT", "1h")
    return folder


def run(capsys, *argv):
    """Run the CLI; returns (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def btc(capsys, command, data_dir, *argv):
    """`tradeguard COMMAND --data-dir DIR --pair BTC/USDT ARGV...`"""
    return run(capsys, command, "--data-dir", str(data_dir), "--pair", "BTC/USDT", *argv)


def test_assess_json_has_the_contract_fields(capsys, data_dir):
    code, out, _ = btc(capsys, "assess", data_dir, "--timeframe", "1h", "--at", "2024-02-20T05:00:00Z")
    assert code == 0
    body = json.loads(out)
    assert body.keys() >= CONTRACT
    assert body["as_of"] == "2024-02-20T05:00:00Z" and body["data_age_s"] == 0
    assert set(body["risk_breakdown"]) == {"volatility", "regime", "trend_strength", "momentum", "external"}
    assert {"flag_extreme_fear", "flag_high_volatility", "flag_downtrend", "flag_panic"} <= body[
        "event_flags"
    ].keys()
    assert body["fear_greed_index"] is None and body["risk_breakdown"]["external"] is None
    assert body["data_quality"]["candles"] == 1600


def test_assess_between_closes_uses_the_last_closed_candle(capsys, data_dir):
    _, out, _ = btc(capsys, "assess", data_dir, "--at", "2024-02-20T05:59:59Z")
    body = json.loads(out)
    assert body["as_of"] == "2024-02-20T05:00:00Z" and body["data_age_s"] == 3599


def test_assess_latest_and_table(capsys, data_dir):
    code, out, _ = btc(capsys, "assess", data_dir, "--at", "latest", "--format", "table")
    assert code == 0
    assert "safe_to_trade" in out and "reasons:" in out and "2024-03-07T16:00:00+00:00" in out


def test_assess_now_on_old_data_is_stale(capsys, data_dir):
    _, out, _ = btc(capsys, "assess", data_dir)
    body = json.loads(out)
    assert body["safe_to_trade"] is False and "stale_data" in body["blocked_by"]


def test_assess_resamples_a_missing_timeframe(capsys, data_dir):
    _, out, _ = btc(capsys, "assess", data_dir, "--timeframe", "4h", "--at", "latest")
    body = json.loads(out)
    assert body["timeframe"] == "4h" and body["data_quality"]["resampled_from"] == "1h"
    assert body["candles_used"] == 400


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pair", "DOGE/USDT"], "pairs with 1h data there: BTC/USDT"),
        (["--pair", "BTC/USDT", "--at", "yesterday-ish"], "invalid date"),
        (["--pair", "BTC/USDT", "--at", "2020-01-01T00:00:00Z"], "the data starts at 2024-01-01T00:00:00Z"),
    ],
)
def test_assess_bad_input_is_one_clear_error(capsys, data_dir, argv, message):
    code, out, err = run(capsys, "assess", "--data-dir", str(data_dir), *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_missing_data_dir_and_bad_config(capsys, data_dir, tmp_path):
    code, _, err = run(capsys, "assess", "--data-dir", str(tmp_path / "nope"), "--pair", "BTC/USDT")
    assert code == 2 and "does not exist" in err
    cfg = tmp_path / "guard.toml"
    cfg.write_text("[decision]\nblock_risk_score_frm = 0.8\n")
    code, _, err = btc(capsys, "assess", data_dir, "--config", str(cfg))
    assert code == 2 and "decision.block_risk_score_frm" in err


def test_config_file_changes_the_decision(capsys, data_dir, tmp_path):
    cfg = tmp_path / "guard.toml"
    cfg.write_text("[decision]\nblock_risk_score_from = 0.01\n")
    _, out, _ = btc(capsys, "assess", data_dir, "--at", "latest", "--config", str(cfg))
    assert "risk_score" in json.loads(out)["blocked_by"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_history_writes_one_row_per_candle(capsys, data_dir, tmp_path, suffix):
    out_file = tmp_path / f"guard{suffix}"
    code, out, _ = btc(
        capsys,
        "history",
        data_dir,
        "--timeframe",
        "1h",
        "--start",
        "2024-02-01",
        "--end",
        "2024-02-02T23:00:00Z",
        "--out",
        str(out_file),
    )
    assert code == 0 and "wrote 48 rows" in out
    frame = pd.read_csv(out_file) if suffix == ".csv" else pd.read_parquet(out_file)
    assert len(frame) == 48
    assert {"date", "safe_to_trade", "risk_score", "regime", "flag_panic", "flag_extreme_fear"} <= set(
        frame.columns
    )
    assert frame["flag_panic"].dtype == bool and frame["safe_to_trade"].dtype == bool
    assert str(frame["date"].iloc[0]).startswith("2024-02-01")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "2030-01-01", "--end", "2030-02-01", "--out", "x.csv"], "the data covers"),
        (["--start", "2024-02-02", "--end", "2024-02-01", "--out", "x.csv"], "is after"),
        (["--start", "2024-02-01", "--end", "2024-02-02", "--out", "x.xlsx"], ".csv or .parquet"),
    ],
)
def test_history_bad_input(capsys, data_dir, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = btc(capsys, "history", data_dir, *argv)
    assert code == 2 and message in err
    assert not list(tmp_path.glob("x.*"))


def test_malformed_date_option_exits_nonzero(capsys, data_dir):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "history",
                "--data-dir",
                str(data_dir),
                "--pair",
                "BTC/USDT",
                "--start",
                "soon",
                "--end",
                "2024-02-01",
                "--out",
                "x.csv",
            ]
        )
    assert exc.value.code == 2
    assert "invalid date 'soon'" in capsys.readouterr().err


def test_assess_on_real_data_around_ftx(capsys, shared_data):
    code, out, _ = run(
        capsys,
        "assess",
        "--data-dir",
        str(shared_data / "binance"),
        "--external-dir",
        str(shared_data / "external"),
        "--pair",
        "BTC/USDT",
        "--at",
        "2022-11-08T18:00:00Z",
    )
    body = json.loads(out)
    assert code == 0 and body["safe_to_trade"] is False and body["event_flags"]["flag_panic"]
    assert (
        body["fear_greed_index"] is not None and body["vix"] is not None and body["funding_rate"] is not None
    )
    assert any("Panic" in r for r in body["reasoning"])
