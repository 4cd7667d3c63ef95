"""Portfolio guard endpoints. Every route acts on one account: the key's own, or any named one for admin
keys (a key of account A asking for B gets 403)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from tradeguard.adapters.store.guard_state import FLEET
from tradeguard.guards.portfolio import AccountRisk, PortfolioGuard
from tradeguard.service.auth import Operator, Principal, Reader, account_scope
from tradeguard.service.problems import Problem

router = APIRouter(prefix="/v1", tags=["portfolio"])

AccountQuery = Annotated[
    str | None, Query(description="account (default: the key's own; any for admin keys)")
]


def _guard(request: Request) -> PortfolioGuard:
    return request.app.state.portfolio


def _json(body: Any) -> Response:
    return Response(
        json.dumps(_clean(body), separators=(",", ":"), default=str), media_type="application/json"
    )


def _clean(value: Any) -> Any:
    """JSON has no infinity or NaN: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


async def _risk(request: Request, principal: Principal, account: str | None) -> AccountRisk:
    name = account_scope(principal, account)
    guard = _guard(request)
    risk = guard.risk.get(name)
    return risk if risk is not None else await guard.evaluate(name)


@router.get(
    "/portfolio",
    summary="Exposure, leverage and per-asset net exposure of an account (admin without account: the fleet)",
)
async def portfolio(request: Request, principal: Reader, account: AccountQuery = None) -> Response:
    if account is None and principal.scope == "admin":
        fleet = _guard(request).fleet_exposure().model_dump(mode="json")
        return _json(
            {"account": None, "evaluated_at": fleet["as_of"], **fleet["fleet"], "accounts": fleet["accounts"]}
        )
    risk = await _risk(request, principal, account)
    body = risk.exposure.model_dump(mode="json")
    summary = body["accounts"].get(risk.account) or body["fleet"]
    return _json(
        {
            "account": risk.account,
            "evaluated_at": risk.evaluated_at.isoformat(),
            "trading_state": risk.trading.state,
            "stale": body["fleet"]["stale"],
            **summary,
        }
    )


@router.get("/portfolio/drawdown", summary="Drawdown per window from the equity peak, escalation, breakers")
async def drawdown(request: Request, principal: Reader, account: AccountQuery = None) -> Response:
    risk = await _risk(request, principal, account)
    report = risk.drawdown.model_dump(mode="json") if risk.drawdown else None
    return _json(
        {
            "account": risk.account,
            "evaluated_at": risk.evaluated_at.isoformat(),
            "drawdown": report,
            "reason": None if report else "no equity reported yet",
        }
    )


@router.get("/portfolio/correlation", summary="Rolling strategy correlation, early warning, regime change")
async def correlation(request: Request, principal: Reader, account: AccountQuery = None) -> Response:
    risk = await _risk(request, principal, account)
    return _json({"account": risk.account, **risk.correlation.model_dump(mode="json")})


@router.get("/portfolio/liquidation", summary="Distance to liquidation of every position")
async def liquidation(request: Request, principal: Reader, account: AccountQuery = None) -> Response:
    risk = await _risk(request, principal, account)
    reports = {ex: r.model_dump(mode="json") for ex, r in risk.liquidation.items()}
    distances = [r.min_distance_pct for r in risk.liquidation.values() if r.min_distance_pct is not None]
    return _json(
        {
            "account": risk.account,
            "evaluated_at": risk.evaluated_at.isoformat(),
            "min_distance_pct": min(distances) if distances else None,
            "exchanges": reports,
        }
    )


@router.get("/breakers", summary="Circuit breakers of an account and their states")
async def breakers(request: Request, principal: Reader, account: AccountQuery = None) -> Response:
    risk = await _risk(request, principal, account)
    return _json(
        {
            "account": risk.account,
            "readings": risk.readings,
            "breakers": [b.to_dict() for b in risk.breakers.values()],
        }
    )


@router.post("/breakers/{breaker_id}/reset", summary="Close a breaker by hand (operator)")
async def reset_breaker(
    request: Request, breaker_id: str, principal: Operator, account: AccountQuery = None
) -> Response:
    name = account_scope(principal, account)
    try:
        state = await _guard(request).reset_breaker(name, breaker_id, by=principal.key_id or "unknown")
    except KeyError as exc:
        known = sorted(_guard(request).breakers.get(name, {}))
        raise Problem(404, f"no breaker {breaker_id!r} for account {name!r}", breakers=known) from exc
    return _json({"account": name, "breaker": state.to_dict()})


class KillSwitchBody(BaseModel):
    engaged: bool
    reason: str | None = Field(None, max_length=500)
    account: str | None = Field(None, description="default: the key's account; '*' (admin) for the fleet")


@router.post("/kill-switch", summary="Engage or release the kill switch (operator)")
async def kill_switch(request: Request, body: KillSwitchBody, principal: Operator) -> Response:
    if body.account == FLEET and principal.scope != "admin":
        raise Problem(403, "only admin keys can switch the whole fleet")
    name = FLEET if body.account == FLEET else account_scope(principal, body.account)
    await _guard(request).set_kill_switch(name, body.engaged, body.reason, by=principal.key_id or "unknown")
    return _json({"account": name, "engaged": body.engaged, "reason": body.reason})


@router.get("/trading-state", summary="ACTIVE / REDUCING / HALTED for an account, and why")
async def trading_state(request: Request, principal: Reader, account: AccountQuery = None) -> Response:
    risk = await _risk(request, principal, account)
    return _json(
        {
            "account": risk.account,
            "evaluated_at": risk.evaluated_at.isoformat(),
            **risk.trading.model_dump(mode="json"),
        }
    )
