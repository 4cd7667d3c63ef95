"""Write docs/validation.md: does the market guard flag crashes in time, and are unsafe periods worse?

Usage: python scripts/validate.py --data ../shared/data --out docs/validation.md
Tuning was done on 2018-2023 only; 2024-2026 is reported separately as out-of-sample.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from tradeguard.adapters.candle_files import available_pairs
from tradeguard.core.assessment import assess_history
from tradeguard.core.config import MarketGuardConfig
from tradeguard.guards.market import load_market_data

EVENTS = ("2020-03-12", "2021-05-19", "2022-06-13", "2022-11-09")
SHOCK = -0.05
MAX_LAG = 3
HORIZON = 24
IN_SAMPLE_LAST_YEAR = 2023


def forward_metrics(
    close: np.ndarray, horizon: int, periods_per_year: float
) -> tuple[np.ndarray, np.ndarray]:
    """Realized vol (annualised) of the next `horizon` log returns and max drawdown (%) over that path."""
    n = len(close)
    vol = np.full(n, np.nan)
    mdd = np.full(n, np.nan)
    if n > horizon:
        logret = np.diff(np.log(close))
        vol[: n - horizon] = np.std(sliding_window_view(logret, horizon), axis=1, ddof=1) * np.sqrt(
            periods_per_year
        )
        paths = sliding_window_view(close, horizon + 1)
        peaks = np.maximum.accumulate(paths, axis=1)
        mdd[: n - horizon] = ((paths / peaks).min(axis=1) - 1.0) * 100.0
    return vol, mdd


def pair_frame(data_dir: Path, external_dir: Path, pair: str, config: MarketGuardConfig) -> pd.DataFrame:
    data = load_market_data(data_dir, pair, "1h", external_dir, config)
    history = assess_history(data.candles, data.external.series, timeframe="1h", config=config)
    close = data.candles.close
    history["close"] = close
    history["ret"] = np.concatenate([[np.nan], close[1:] / close[:-1] - 1.0])
    history["fwd_vol"], history["fwd_mdd_pct"] = forward_metrics(close, HORIZON, 8760.0)
    history["fwd_ret_pct"] = (
        np.concatenate([close[HORIZON:] / close[:-HORIZON] - 1.0, np.full(HORIZON, np.nan)]) * 100.0
    )
    history["pair"] = pair
    history["year"] = history["date"].dt.year
    return history


def event_section(btc: pd.DataFrame) -> tuple[list[str], int]:
    lines = [
        "## 1. Crash response, BTC/USDT 1h",
        "",
        f"Expectation: unsafe within {MAX_LAG} candles after the first hourly close-to-close move of "
        f"{SHOCK:.0%} or worse. Lag 0 means the guard already says unsafe at the close of that candle. "
        "The search window is the named day ±1 day.",
        "",
    ]
    lines += [
        "| event | first move ≤ −5% (candle open) | move | first unsafe after it | lag (candles) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    failures = 0
    details: list[str] = []
    for day in EVENTS:
        d = pd.Timestamp(day, tz="UTC")
        window = btc[(btc["date"] >= d - pd.Timedelta(days=1)) & (btc["date"] < d + pd.Timedelta(days=2))]
        shocks = window[window["ret"] <= SHOCK]
        if shocks.empty:
            worst = window.loc[window["ret"].idxmin()]
            lines.append(
                f"| {day} | none (largest hourly move {worst['ret']:+.2%} at {worst['date']:%Y-%m-%d %H:%M}) "
                f"| – | – | – | not applicable |"
            )
            t0 = int(worst.name)
        else:
            t0 = int(shocks.index[0])
            after = btc.loc[t0 : t0 + 48]
            unsafe = after[~after["safe_to_trade"]]
            lag = int(unsafe.index[0] - t0) if len(unsafe) else None
            ok = lag is not None and lag <= MAX_LAG
            failures += 0 if ok else 1
            first = f"{btc.loc[unsafe.index[0], 'date']:%Y-%m-%d %H:%M}" if len(unsafe) else "never (48 h)"
            lines.append(
                f"| {day} | {btc.loc[t0, 'date']:%Y-%m-%d %H:%M} | {btc.loc[t0, 'ret']:+.2%} | {first} | "
                f"{lag if lag is not None else '–'} | {'pass' if ok else 'FAIL'} |"
            )
        around = btc.loc[max(t0 - 3, 0) : t0 + 6]
        details += [
            f"### {day}",
            "",
            "| candle open (UTC) | close | 1h move | safe | regime | risk | vol pct | blocked_by |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for _, r in around.iterrows():
            details.append(
                f"| {r['date']:%Y-%m-%d %H:%M} | {r['close']:,.0f} | {r['ret']:+.2%} | "
                f"{'yes' if r['safe_to_trade'] else 'NO'} | "
                f"{r['regime']} | {r['risk_score']:.2f} | {r['volatility_percentile']:.2f} | "
                f"{r['blocked_by'] or '–'} |"
            )
        details.append("")
    return [*lines, "", *details], failures


def year_section(frames: pd.DataFrame) -> list[str]:
    share = frames.pivot_table(
        index="pair", columns="year", values="safe_to_trade", aggfunc=lambda s: 1.0 - s.mean()
    )
    years = list(share.columns)
    lines = [
        "## 2. Share of time flagged unsafe, per pair and year",
        "",
        "| pair | " + " | ".join(str(y) for y in years) + " |",
        "|---" * (len(years) + 1) + "|",
    ]
    for pair, row in share.iterrows():
        lines.append(f"| {pair} | " + " | ".join("–" if pd.isna(v) else f"{v:.0%}" for v in row) + " |")
    return [*lines, ""]


def outcome_table(frames: pd.DataFrame, title: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| pair | unsafe share | fwd 24h vol safe | unsafe | ratio | fwd 24h max DD safe | unsafe | ratio "
        "| fwd 24h return safe | unsafe |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = [*frames.groupby("pair"), ("ALL PAIRS", frames)]
    for pair, g in groups:
        g = g.dropna(subset=["fwd_vol", "fwd_mdd_pct"])
        safe, unsafe = g[g["safe_to_trade"]], g[~g["safe_to_trade"]]
        if safe.empty or unsafe.empty:
            continue
        vs, vu = safe["fwd_vol"].median(), unsafe["fwd_vol"].median()
        ds, du = safe["fwd_mdd_pct"].median(), unsafe["fwd_mdd_pct"].median()
        lines.append(
            f"| {pair} | {len(unsafe) / len(g):.0%} | {vs:.0%} | {vu:.0%} | {vu / vs:.2f} | "
            f"{ds:.2f}% | {du:.2f}% | "
            f"{du / ds:.2f} | {safe['fwd_ret_pct'].median():+.2f}% | {unsafe['fwd_ret_pct'].median():+.2f}% |"
        )
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/validation.md"))
    args = parser.parse_args()
    data_dir, external_dir = args.data / "binance", args.data / "external"
    if not (data_dir / "BTC_USDT-1h.feather").is_file():
        sys.stderr.write(f"validate: no market data at {data_dir}\n")
        return 2
    config = MarketGuardConfig()
    pairs = [p for p in available_pairs(data_dir, "1h") if ":" not in p]
    frames = pd.concat([pair_frame(data_dir, external_dir, p, config) for p in pairs], ignore_index=True)
    btc = frames[frames["pair"] == "BTC/USDT"].reset_index(drop=True)
    events, failures = event_section(btc)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    insample = frames[frames["year"] <= IN_SAMPLE_LAST_YEAR]
    outsample = frames[frames["year"] > IN_SAMPLE_LAST_YEAR]
    head = [
        "# Market guard validation",
        "",
        f"Generated by `make validate` (scripts/validate.py) at commit {commit or 'unknown'} on "
        f"{datetime.now(UTC):%Y-%m-%d}, from the real Binance 1h candles and external files in "
        "../shared/data, "
        "with the default `MarketGuardConfig`. Every row is a point-in-time assessment at the candle's close "
        "(`tradeguard history`). Thresholds were tuned on 2018–2023 only; 2024–2026 is held out as an "
        "out-of-sample check and reported separately.",
        "",
        f"Pairs: {', '.join(pairs)}. Crash-response failures: {failures}.",
        "",
    ]
    outcome = [
        "## 3. Are unsafe periods worse afterwards?",
        "",
        f"Median over candles of the next {HORIZON} hours' realized volatility (annualised), maximum "
        "drawdown along the path of the next 24 closes, and the 24h return, split by the guard's "
        "`safe_to_trade` at the candle's close. Ratio = unsafe / safe (> 1: unsafe periods were worse). "
        "The last column pair is the cost side: the return a bot forgoes while it is kept out.",
        "",
    ]
    outcome += outcome_table(insample, f"In-sample 2018–{IN_SAMPLE_LAST_YEAR}")
    outcome += outcome_table(outsample, f"Out-of-sample {IN_SAMPLE_LAST_YEAR + 1}–2026")
    text = "\n".join(head + events + year_section(frames) + outcome)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(
        f"wrote {args.out} ({len(frames)} assessed candles, crash-response failures: {failures})\n"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
