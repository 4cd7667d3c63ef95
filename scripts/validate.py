"""Write docs/validation.md: does the market guard flag crashes in time, are unsafe periods worse, and
does the order guard's 1-day VaR hold up in a backtest?

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

from tradeguard.adapters.candle_files import available_pairs, load_candles
from tradeguard.core.assessment import assess_history
from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.var import daily_returns
from tradeguard.core.var_backtest import (
    BASEL_CONFIDENCE,
    BASEL_WINDOW,
    BaselWindows,
    Coverage,
    LRTest,
    basel_windows,
    coverage,
    exception_series,
    rolling_bootstrap_var,
    rolling_fhs_garch_var,
)
from tradeguard.guards.market import load_market_data

EVENTS = ("2020-03-12", "2021-05-19", "2022-06-13", "2022-11-09")
SHOCK = -0.05
MAX_LAG = 3
HORIZON = 24
IN_SAMPLE_LAST_YEAR = 2023
VAR_CONFIDENCES = (0.95, 0.99)
VAR_START = pd.Timestamp("2019-01-01", tz="UTC")
VAR_LOOKBACK = 90
VAR_SCENARIOS = 10_000
GARCH_WINDOW, GARCH_MIN, GARCH_REFIT = 1000, 250, 20
EPISODE_DAYS = 3
ALPHA = 0.05


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


def base(pair: str) -> str:
    return pair.split("/")[0]


def daily_closes(data_dir: Path, pairs: list[str]) -> pd.DataFrame:
    """The price at 00:00 UTC of each day: the close of the 23:00 hourly candle, labelled with its day
    (as Binance labels 1d candles). One row per calendar day; a day without that candle is NaN."""
    columns: dict[str, pd.Series] = {}
    for pair in pairs:
        candles = load_candles(data_dir, pair, "1h")
        last = candles[candles["date"].dt.hour == 23]
        columns[pair] = pd.Series(
            last["close"].to_numpy(), index=pd.DatetimeIndex(last["date"].dt.floor("D"))
        )
    frame = pd.DataFrame(columns).sort_index()
    return frame.reindex(pd.date_range(frame.index[0], frame.index[-1], freq="D"))


def var_forecasts(closes: pd.DataFrame, pairs: list[str]) -> tuple[pd.Series, dict[str, pd.DataFrame]]:
    """Realized equal-weight portfolio returns and both models' VaR forecasts, on the days both have one."""
    weights = {p: 1.0 / len(pairs) for p in pairs}
    returns = daily_returns(closes[pairs])
    realized = returns @ pd.Series(weights)
    models = {
        "bootstrap": rolling_bootstrap_var(returns, weights, VAR_CONFIDENCES, VAR_LOOKBACK, VAR_SCENARIOS),
        "FHS-GARCH": rolling_fhs_garch_var(realized, VAR_CONFIDENCES, GARCH_WINDOW, GARCH_MIN, GARCH_REFIT),
    }
    start = max(VAR_START, *(f.index[0] for f in models.values()))
    return realized.loc[start:], {m: f.loc[start:] for m, f in models.items()}


def verdict(cov: Coverage) -> str:
    """What the tests reject at level ALPHA, read off the numbers."""
    found = []
    if cov.kupiec.p_value < ALPHA:
        found.append("too many exceptions" if cov.exceptions > cov.expected else "too few exceptions")
    if cov.independence.p_value < ALPHA:
        found.append("exceptions not independent")
    if cov.conditional.p_value < ALPHA and not found:
        found.append("conditional coverage rejected")
    return "; ".join(found) or "not rejected"


def lr_cell(test: LRTest) -> str:
    return f"{test.statistic:.2f} ({test.p_value:.3f})"


def span_pct(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}%"


def coverage_rows(runs: dict[str, tuple[pd.Series, dict[str, pd.DataFrame]]]) -> list[dict]:
    rows = []
    for name, (realized, models) in runs.items():
        for model, forecast in models.items():
            for c in VAR_CONFIDENCES:
                hits = exception_series(realized, forecast[c])
                rows.append(
                    {
                        "series": name,
                        "model": model,
                        "cov": coverage(hits, c),
                        "hits": hits,
                        "mean_var_pct": 100.0 * forecast[c].mean(),
                        "basel": basel_windows(hits, BASEL_WINDOW) if c == BASEL_CONFIDENCE else None,
                    }
                )
    return rows


def crash_rows(runs: dict[str, tuple[pd.Series, dict[str, pd.DataFrame]]]) -> list[dict]:
    """Per named crash day and series: the worst day within ±EPISODE_DAYS and each model's VaR and
    exceptions in that window."""
    out = []
    for day in EVENTS:
        d = pd.Timestamp(day, tz="UTC")
        for name, (realized, models) in runs.items():
            window = realized.loc[d - pd.Timedelta(days=EPISODE_DAYS) : d + pd.Timedelta(days=EPISODE_DAYS)]
            if window.empty:
                continue
            worst = window.idxmin()
            out.append(
                {
                    "event": day,
                    "series": name,
                    "worst": worst,
                    "ret": float(window[worst]),
                    "days": len(window),
                    "var": {m: float(f.loc[worst, BASEL_CONFIDENCE]) for m, f in models.items()},
                    "hits": {
                        (m, c): int(exception_series(window, f[c]).sum())
                        for m, f in models.items()
                        for c in VAR_CONFIDENCES
                    },
                }
            )
    return out


def summary_lines(rows: list[dict], crashes: list[dict], models: list[str]) -> list[str]:
    """Findings in words, each computed from the tables above."""
    lines = ["### 4.4 Findings (generated from the tables)", ""]
    for model in models:
        for c in VAR_CONFIDENCES:
            sel = [r for r in rows if r["model"] == model and r["cov"].confidence == c]
            kupiec = [r for r in sel if r["cov"].kupiec.p_value < ALPHA]
            many = sum(r["cov"].exceptions > r["cov"].expected for r in kupiec)
            indep = sum(r["cov"].independence.p_value < ALPHA for r in sel)
            lines.append(
                f"- {model}, {c:.0%}: exception rates {span_pct([r['cov'].rate_pct for r in sel])} "
                f"(expected {100 * (1 - c):.0f}%), mean VaR {span_pct([r['mean_var_pct'] for r in sel])}; "
                f"Kupiec rejects correct coverage for {len(kupiec)} of {len(sel)} series"
                + (f" ({many} with too many exceptions)" if kupiec else "")
                + f", independence is rejected for {indep} of {len(sel)}."
            )
    flagged = {m: sum(verdict(r["cov"]) != "not rejected" for r in rows if r["model"] == m) for m in models}
    cases = len(rows) // len(models)
    lines.append(
        f"- At the {ALPHA:.0%} level, at least one test rejects "
        + ", ".join(f"{m} in {n} of {cases}" for m, n in flagged.items())
        + " (series × confidence) cases."
    )
    for model in models:
        sel = [r for r in rows if r["model"] == model and r["basel"] is not None]
        total = sum(r["basel"].green + r["basel"].yellow + r["basel"].red for r in sel)
        red = sum(r["basel"].red for r in sel)
        yellow = sum(r["basel"].yellow for r in sel)
        worst = max(sel, key=lambda r: r["basel"].worst_exceptions or 0)
        b = worst["basel"]
        lines.append(
            f"- {model}, Basel 99%: {red} of {total} windows red ({100 * red / total:.1f}%) and {yellow} "
            f"yellow ({100 * yellow / total:.1f}%) over the three series; worst: {b.worst_exceptions} "
            f"exceptions ({worst['series']}, window ending {b.worst_end:%Y-%m-%d})."
        )
    for model in models:
        held = [f"{x['event']} {x['series']}" for x in crashes if x["ret"] >= -x["var"][model]]
        ratios = [-x["ret"] / x["var"][model] for x in crashes]
        in_windows = sum(x["hits"][(model, BASEL_CONFIDENCE)] for x in crashes)
        days = sum(x["days"] for x in crashes)
        lines.append(
            f"- {model}, crash episodes: the worst day broke the 99% VaR in {len(crashes) - len(held)} of "
            f"{len(crashes)} (episode, series) cases (held: {', '.join(held) or 'none'}); on these worst "
            f"days the loss was {min(ratios):.2f}–{max(ratios):.2f} times the VaR (median "
            f"{float(np.median(ratios)):.2f}); {in_windows} exceptions at 99% in the {days} episode days "
            f"({days * (1 - BASEL_CONFIDENCE):.1f} expected)."
        )
    return [*lines, ""]


def var_section(data_dir: Path, pairs: list[str]) -> list[str]:
    closes = daily_closes(data_dir, pairs)
    starts = {p: closes[p].first_valid_index() for p in pairs}
    five = sorted(sorted(pairs, key=lambda p: (starts[p], p))[:5])
    basket = f"EW5 ({', '.join(base(p) for p in five)})"
    runs = {p: var_forecasts(closes, [p]) for p in ("BTC/USDT", "ETH/USDT")}
    runs[basket] = var_forecasts(closes, five)
    models = list(runs[basket][1])
    missing = ", ".join(f"{base(p)} {int(closes[p].loc[starts[p] :].isna().sum())}" for p in five)
    rows = coverage_rows(runs)
    crashes = crash_rows(runs)
    first, last = min(r["hits"].index[0] for r in rows), max(r["hits"].index[-1] for r in rows)
    lines = [
        "## 4. VaR backtest: 1-day 95% and 99% VaR",
        "",
        "Daily closes are the price at 00:00 UTC (the close of the 23:00 hourly candle, labelled with its "
        "day as Binance labels 1d candles); returns are simple; a day missing for any member is dropped with "
        "the next one, so no return spans two days. Series: BTC/USDT, ETH/USDT and an equal-weight portfolio "
        f"{basket}: the five pairs with the longest common history in the data (common start "
        f"{max(starts[p] for p in five):%Y-%m-%d}; days without a 23:00 candle since each pair's start: "
        f"{missing}). The portfolio holds a constant 1/5 of its value in each pair (rebalanced daily); VaR "
        "and returns are fractions of its value.",
        "",
        "Models, with no look-ahead (the VaR for day t uses returns up to day t − 1 only):",
        "",
        f"- **bootstrap**: the production model (`core.var`): {VAR_SCENARIOS:,} joint rows drawn with "
        f"replacement from the last {VAR_LOOKBACK} daily returns, P&L of the weights, VaR = the "
        "⌈n(1 − c)⌉-th worst scenario; re-drawn every day with its own seed.",
        f"- **FHS-GARCH**: filtered historical simulation. GARCH(1,1) with a constant mean (`arch`, Gaussian "
        f"QML) on the last ≤ {GARCH_WINDOW} returns, re-fitted every {GARCH_REFIT} days (the variance "
        "recursion runs on daily in between); VaR = −μ + σ_t × the empirical (1 − c)-quantile loss of the "
        "standardized residuals up to t − 1 (the limit of bootstrapping them, so no scenarios are drawn); "
        f"first forecast after {GARCH_MIN} returns.",
        "",
        f"Both models are scored on the same days, {first:%Y-%m-%d} – {last:%Y-%m-%d} (from 2019, or "
        "later where the FHS history is not yet long enough). An exception is a realized return below −VaR. "
        f"Tests at the {ALPHA:.0%} level: Kupiec POF (χ²(1), coverage), Christoffersen independence "
        "(χ²(1), clustering) and conditional coverage (χ²(2)); cells show LR (p-value). Mean VaR is the "
        "cost side: a model can pass by forecasting huge losses.",
        "",
        "### 4.1 Coverage",
        "",
        "| series | model | conf. | days | exceptions | expected | rate | mean VaR | Kupiec POF | "
        "independence | cond. coverage | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cov: Coverage = r["cov"]
        lines.append(
            f"| {r['series']} | {r['model']} | {cov.confidence:.0%} | {cov.observations} | "
            f"{cov.exceptions} | {cov.expected:.1f} | {cov.rate_pct:.2f}% | {r['mean_var_pct']:.2f}% | "
            f"{lr_cell(cov.kupiec)} | {lr_cell(cov.independence)} | {lr_cell(cov.conditional)} | "
            f"{verdict(cov)} |"
        )
    lines += [
        "",
        f"### 4.2 Basel traffic light, 99% VaR, every {BASEL_WINDOW}-day window",
        "",
        f"Zones per window of {BASEL_WINDOW} days (step: one day): green 0–4 exceptions, yellow 5–9, red 10 "
        "or more.",
        "",
        "| series | model | windows | green | yellow | red | worst window (exceptions, last day) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b: BaselWindows | None = r["basel"]
        if b is None:
            continue
        worst = f"{b.worst_exceptions}, {b.worst_end:%Y-%m-%d}" if b.worst_end is not None else "–"
        lines.append(
            f"| {r['series']} | {r['model']} | {b.green + b.yellow + b.red} | {b.green} | {b.yellow} | "
            f"{b.red} | {worst} |"
        )
    lines += [
        "",
        f"### 4.3 Crash episodes (named day ±{EPISODE_DAYS} days)",
        "",
        "The worst day in each window, its realized return and each model's 99% VaR for that day (bold: "
        "exceeded), and the exceptions in the whole window, bootstrap / FHS-GARCH.",
        "",
        "| episode | series | worst day | return | "
        + " | ".join(f"{m} 99% VaR" for m in models)
        + " | exceptions 99% | exceptions 95% |",
        "|---|---|---|---|" + "---|" * len(models) + "---|---|",
    ]
    for x in crashes:
        cells = [
            f"**{x['var'][m]:.2%}**" if x["ret"] < -x["var"][m] else f"{x['var'][m]:.2%}" for m in models
        ]
        counts = [
            " / ".join(str(x["hits"][(m, c)]) for m in models) for c in sorted(VAR_CONFIDENCES, reverse=True)
        ]
        lines.append(
            f"| {x['event']} | {x['series']} | {x['worst']:%Y-%m-%d} | {x['ret']:+.2%} | "
            f"{' | '.join(cells)} | {' | '.join(counts)} |"
        )
    lines += ["", *summary_lines(rows, crashes, models)]
    return lines


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
        "# Market guard and VaR validation",
        "",
        f"Generated by `make validate` (scripts/validate.py) at commit {commit or 'unknown'} on "
        f"{datetime.now(UTC):%Y-%m-%d}, from the real Binance 1h candles and external files in "
        "../shared/data, "
        "with the default `MarketGuardConfig`. Every row is a point-in-time assessment at the candle's close "
        "(`tradeguard history`). Thresholds were tuned on 2018–2023 only; 2024–2026 is held out as an "
        "out-of-sample check and reported separately. Section 4 backtests the order guard's 1-day VaR model "
        "on daily closes from the same files.",
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
    var = var_section(data_dir, pairs)
    text = "\n".join(head + events + year_section(frames) + outcome + var)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(
        f"wrote {args.out} ({len(frames)} assessed candles, crash-response failures: {failures})\n"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
