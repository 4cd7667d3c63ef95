"""`GET /v1/sla`: how an account fared over a window — time in each trading state, breaker trips and time to
reset (from the audit log, see `core.sla` for the definitions), webhook deliveries (the outbox's table,
read only) and the API's p99 latency (this process's histogram).

Sources:
- trading state: `risk.portfolio_check` records (written whenever the state changes, and on an account's
  first evaluation after a start); the state in force at the window start is the last one before it.
  While the service is down the last recorded state is taken to hold.
- breakers: `risk.breaker.transition` records in the window, plus for every breaker not closed at its start
  the earlier trip that began the outage (the audit log is read backwards until it is found).
- webhooks: deliveries of the account's events created in the window. `failed` = failed so far and to be
  retried, `pending` = not attempted yet, `dead` = given up. success_rate = succeeded / (succeeded + dead),
  the deliveries whose fate is settled; p95_latency_ms = nearest-rank p95 of the succeeded deliveries'
  latency (enqueued to the receiver's 2xx answer).
- api: every HTTP request this process has served since it started (not just the window, and not other
  replicas; hence `"scope": "process"`): the p99 of `tradeguard_http_request_duration_seconds` summed
  over routes and statuses, interpolated linearly within its bucket (PromQL `histogram_quantile`), in ms.
Figures without data are null.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Final

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from tradeguard.adapters.store.audit_log import audit_log
from tradeguard.adapters.store.schema import DELIVERY_STATUSES, webhook_deliveries
from tradeguard.core.breakers import BREAKER_KINDS
from tradeguard.core.sla import (
    BreakerChange,
    breaker_stats,
    histogram_quantile,
    parse_window,
    percentile,
    state_shares,
)
from tradeguard.errors import InputError
from tradeguard.service.auth import Reader, account_scope
from tradeguard.service.metrics import Metrics
from tradeguard.service.problems import Problem

router = APIRouter(prefix="/v1", tags=["portfolio"])

STATE_CHECK: Final = "risk.portfolio_check"
TRANSITION: Final = "risk.breaker.transition"
_PAGE: Final = 1_000
_a = audit_log.c
_d = webhook_deliveries.c


@router.get(
    "/sla", summary="Time in each trading state, breaker trips and resets, webhook and API service levels"
)
async def sla(
    request: Request,
    principal: Reader,
    account: Annotated[str | None, Query(description="default: the key's own; any for admin keys")] = None,
    window: Annotated[
        str, Query(max_length=16, description="how far back from now: 1h, 24h, 7d, 30d … (m, h, d; ≤ 90d)")
    ] = "24h",
) -> JSONResponse:
    name = account_scope(principal, account)
    try:
        span = parse_window(window)
    except InputError as exc:
        raise Problem(422, str(exc), window=window) from exc
    now = request.app.state.portfolio.clock()
    start = now - span
    body = await asyncio.to_thread(_report, request.app.state.audit_log.engine, name, start, now)
    webhooks = getattr(request.app.state, "webhooks", None)
    deliveries = (
        None
        if webhooks is None
        else await asyncio.to_thread(_webhooks, webhooks.outbox.engine, name, start, now)
    )
    p99, requests = _api_latency(request.app.state.metrics)
    return JSONResponse(
        {
            "account": name,
            "window": window,
            "from": start.isoformat(),
            "to": now.isoformat(),
            **body,
            "webhooks": deliveries,
            "api": {"p99_latency_ms": p99, "requests": requests, "scope": "process"},
        }
    )


def _report(engine: Engine, account: str, start: datetime, now: datetime) -> dict[str, Any]:
    """Trading-state shares and breaker figures from the audit log."""
    with engine.connect() as conn:
        initial = conn.execute(
            sa.select(_a.payload)
            .where(_a.account == account, _a.type == STATE_CHECK, _a.ts < start)
            .order_by(_a.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
        rows = conn.execute(
            sa.select(_a.type, _a.ts, _a.payload)
            .where(
                _a.account == account, _a.type.in_((STATE_CHECK, TRANSITION)), _a.ts >= start, _a.ts <= now
            )
            .order_by(_a.seq)
        ).all()
        states = [
            (ts, json.loads(payload)["trading_state"]) for type_, ts, payload in rows if type_ == STATE_CHECK
        ]
        changes = [_change(ts, payload) for type_, ts, payload in rows if type_ == TRANSITION]
        first: dict[str, BreakerChange] = {}
        for change in changes:
            first.setdefault(change.breaker_id, change)
        open_at_start = {bid for bid, c in first.items() if c.from_state != "closed"}
        earlier = list(_outage_starts(conn, account, start, open_at_start))
    shares = state_shares(
        None if initial is None else json.loads(initial)["trading_state"], states, start, now
    )
    stats = breaker_stats(sorted(earlier, key=lambda c: c.at) + changes, start, now, BREAKER_KINDS)
    return {
        "trading_state": shares,
        "breaker_trips": {"total": stats.trips, "by_kind": stats.trips_by_kind},
        "mean_time_to_reset_s": stats.mean_time_to_reset_s,
        "resets": stats.resets,
        "manual_resets": stats.manual_resets,
    }


def _outage_starts(
    conn: sa.Connection, account: str, start: datetime, breaker_ids: set[str]
) -> Iterator[BreakerChange]:
    """For each breaker not closed at `start`, its last transition before `start` out of or into "closed"
    (the trip that began the outage), reading the log backwards a page at a time."""
    wanted = set(breaker_ids)
    before: int | None = None
    while wanted:
        query = (
            sa.select(_a.seq, _a.ts, _a.payload)
            .where(_a.account == account, _a.type == TRANSITION, _a.ts < start)
            .order_by(_a.seq.desc())
            .limit(_PAGE)
        )
        if before is not None:
            query = query.where(_a.seq < before)
        rows = conn.execute(query).all()
        for _, ts, payload in rows:
            change = _change(ts, payload)
            if change.breaker_id in wanted and "closed" in (change.from_state, change.to_state):
                wanted.discard(change.breaker_id)
                yield change
        if len(rows) < _PAGE:
            return
        before = rows[-1].seq


def _change(ts: datetime, payload: str) -> BreakerChange:
    t = json.loads(payload)
    return BreakerChange(
        ts, t["breaker_id"], t["kind"], t["from_state"], t["to_state"], t["reason"], t.get("enforced", True)
    )


def _webhooks(engine: Engine, account: str, start: datetime, now: datetime) -> dict[str, Any]:
    """Counts by status, success rate and p95 latency of the account's deliveries created in the window."""
    where = (_d.account == account, _d.created_at >= start, _d.created_at <= now)
    with engine.connect() as conn:
        counts = dict(
            conn.execute(sa.select(_d.status, sa.func.count()).where(*where).group_by(_d.status)).all()
        )
        latencies = conn.execute(
            sa.select(_d.latency_ms).where(*where, _d.status == "succeeded", _d.latency_ms.is_not(None))
        ).scalars()
        p95 = percentile((v for v in latencies if math.isfinite(v)), 0.95)
    by_status = {status: int(counts.get(status, 0)) for status in DELIVERY_STATUSES}
    settled = by_status["succeeded"] + by_status["dead"]
    return {
        "deliveries": sum(by_status.values()),
        **by_status,
        "success_rate": by_status["succeeded"] / settled if settled else None,
        "p95_latency_ms": p95,
    }


def _api_latency(metrics: Metrics) -> tuple[float | None, int]:
    """p99 HTTP latency in ms over every route and status since the process started, and the request count."""
    cumulative: dict[float, float] = {}
    for family in metrics.http.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                cumulative[bound] = cumulative.get(bound, 0.0) + sample.value
    if not cumulative:
        return None, 0
    buckets = sorted(cumulative.items())
    p99 = histogram_quantile(0.99, buckets)
    return (None if p99 is None else p99 * 1000.0), int(buckets[-1][1])
