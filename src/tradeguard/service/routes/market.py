"""Market guard endpoints: risk, regime, volatility, stored history, tracked pairs."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Query, Request, Response

from tradeguard.adapters.candle_files import parse_pair
from tradeguard.core.evaluate import COMPONENTS
from tradeguard.errors import InputError
from tradeguard.service.auth import ReadMarket, require
from tradeguard.service.problems import Problem

router = APIRouter(prefix="/v1", tags=["market"])
_read_market = require("read", market_data=True)

PairQuery = Annotated[str | None, Query(description="ccxt pair, e.g. BTC/USDT; omit for the whole market")]
ExchangeQuery = Annotated[str | None, Query(description="exchange id (default: the configured one)")]

REGIME_FIELDS = (
    "pair",
    "exchange",
    "timeframe",
    "as_of",
    "data_age_s",
    "stale",
    "safe_to_trade",
    "regime",
    "specialist_regime",
    "trend_classification",
    "momentum_classification",
    "synthetic",
)
VOLATILITY_FIELDS = (
    "pair",
    "exchange",
    "timeframe",
    "as_of",
    "data_age_s",
    "stale",
    "volatility",
    "volatility_percentile",
    "volatility_classification",
    "synthetic",
)


def _json(body: Any) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), default=_iso), media_type="application/json")


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _latest(request: Request, pair: str | None, exchange: str | None) -> dict[str, Any]:
    """The latest assessment of the pair (or the market), before the stale policy is applied."""
    engine = request.app.state.engine
    if exchange is not None and exchange.lower() != engine.settings.exchange:
        raise Problem(
            404,
            f"exchange {exchange!r} is not tracked; tracked: {engine.settings.exchange}",
            tracked_exchanges=[engine.settings.exchange],
        )
    if pair is None:
        if engine.market is None:
            raise Problem(
                503,
                "no pair has been assessed yet: the guard is still seeding its data",
                headers={"Retry-After": "5"},
            )
        return engine.market
    try:
        pair = parse_pair(pair)
    except InputError as exc:
        raise Problem(422, str(exc)) from exc
    state = engine.states.get(pair)
    if state is None:
        raise Problem(404, f"pair {pair} is not tracked", tracked_pairs=list(engine.states))
    if state.latest is None:
        raise Problem(
            503, f"no data for {pair} yet: the guard is still seeding it", headers={"Retry-After": "5"}
        )
    return state.latest


def _assessment(request: Request, pair: str | None, exchange: str | None) -> dict[str, Any]:
    """The assessment as served now (data age, stale policy)."""
    return request.app.state.engine.view(_latest(request, pair, exchange))


@router.get(
    "/risk",
    summary="Market-guard assessment of a pair, or of the whole market without `pair`",
    openapi_extra={
        "parameters": [
            {
                "name": "pair",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "ccxt pair, e.g. BTC/USDT; omit for the whole market",
            },
            {
                "name": "exchange",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "exchange id (default: the configured one)",
            },
        ]
    },
)
async def risk(request: Request) -> Response:
    # The hot path: parameters and auth are read directly instead of through FastAPI's dependency solver,
    # which costs more than the rest of the request (see bench/bench_http.py); the contract is the same.
    await _read_market(request)
    query = request.query_params
    body = request.app.state.engine.render(_latest(request, query.get("pair"), query.get("exchange")))
    return Response(body, media_type="application/json")


@router.get("/regime", summary="Regime, specialist regime, trend and momentum of a pair")
async def regime(
    request: Request, _: ReadMarket, pair: PairQuery = None, exchange: ExchangeQuery = None
) -> Response:
    a = _assessment(request, pair, exchange)
    return _json({k: a.get(k) for k in REGIME_FIELDS})


@router.get("/volatility", summary="Realized volatility, its percentile and class for a pair")
async def volatility(
    request: Request, _: ReadMarket, pair: PairQuery = None, exchange: ExchangeQuery = None
) -> Response:
    a = _assessment(request, pair, exchange)
    body = {k: a.get(k) for k in VOLATILITY_FIELDS}
    indicators = a.get("indicators") or {}
    body |= {
        "atr_pct": indicators.get("atr_pct"),
        "bb_width": indicators.get("bb_width"),
        "flag_high_volatility": a["event_flags"].get("flag_high_volatility"),
    }
    return _json(body)


@router.get("/pairs", summary="Tracked pairs with their last candle, data age and source status")
async def pairs(request: Request, _: ReadMarket) -> Response:
    engine = request.app.state.engine
    now = engine.now()
    out = []
    for pair, state in engine.states.items():
        close = state.last_close
        age = (now - close).total_seconds() if close else None
        out.append(
            {
                "pair": pair,
                "exchange": engine.settings.exchange,
                "timeframe": engine.settings.timeframe,
                "last_candle_close": close.isoformat() if close else None,
                "data_age_s": age,
                "stale": age is None or age > engine.stale_after.total_seconds(),
                "candles": len(state.frame),
                "source": engine.feed.status.as_dict(now),
                "synthetic": engine.feed.synthetic,
            }
        )
    return _json(out)


def flatten(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored assessment as one flat row (the columns of `tradeguard history`)."""
    row = {
        k: payload.get(k)
        for k in (
            "as_of",
            "safe_to_trade",
            "risk_score",
            "risk_class",
            "risk_confidence",
            "recommendation",
            "regime",
            "specialist_regime",
            "volatility_classification",
            "trend_classification",
            "momentum_classification",
            "volatility",
            "volatility_percentile",
            "fear_greed_index",
            "funding_rate",
            "btc_dominance",
            "vix",
            "dxy",
        )
    }
    if isinstance(row["as_of"], datetime):
        row["as_of"] = _iso(row["as_of"])
    row["blocked_by"] = ";".join(payload.get("blocked_by") or [])
    row |= {f"risk_{c}": (payload.get("risk_breakdown") or {}).get(c) for c in COMPONENTS}
    row |= {k: bool(v) for k, v in (payload.get("event_flags") or {}).items()}
    return row


@router.get("/risk/history", summary="Stored point-in-time assessments of a pair")
async def history(
    request: Request,
    _: ReadMarket,
    pair: Annotated[str, Query(description="ccxt pair, e.g. BTC/USDT")],
    start: Annotated[datetime | None, Query(description="ISO-8601, inclusive (candle close time)")] = None,
    end: Annotated[datetime | None, Query(description="ISO-8601, inclusive (candle close time)")] = None,
    format: Annotated[Literal["json", "csv", "parquet"], Query()] = "json",
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> Response:
    engine = request.app.state.engine
    try:
        pair = parse_pair(pair)
    except InputError as exc:
        raise Problem(422, str(exc)) from exc
    if pair not in engine.states:
        raise Problem(404, f"pair {pair} is not tracked", tracked_pairs=list(engine.states))
    start, end = (_utc(t) for t in (start, end))
    if start is not None and end is not None and start > end:
        raise Problem(422, f"start {start.isoformat()} is after end {end.isoformat()}")
    rows = await asyncio.to_thread(
        request.app.state.store.assessment_history,
        engine.settings.exchange,
        pair,
        engine.settings.timeframe,
        start,
        end,
        limit,
    )
    if format == "json":
        return _json(rows)
    frame = pd.DataFrame([flatten(r) for r in rows])
    if format == "csv":
        return Response(frame.to_csv(index=False), media_type="text/csv")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet")


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return pd.Timestamp(ts).tz_localize("UTC").to_pydatetime() if ts.tzinfo is None else ts
