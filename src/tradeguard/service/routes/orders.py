"""POST /v1/orders/check: the pre-trade check of one order (see `guards.order` for the checks).

A `bot` key may check orders of its own account only (403 otherwise; `admin` keys any account). The answer is
always 200 with a decision — a failing dependency is a decision too (`check_error:<check>`: block in live
mode, listed in paper mode); 422 for a malformed order.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tradeguard.core.order_check import OrderDecision, OrderRequest
from tradeguard.guards.order import OrderGuard
from tradeguard.service.auth import Bot, account_scope

router = APIRouter(prefix="/v1", tags=["orders"])


@router.post(
    "/orders/check",
    response_model=OrderDecision,
    summary="Check one order before it goes out: allow, reduce, delay or block, with every check's outcome",
)
async def check_order(order: OrderRequest, request: Request, principal: Bot) -> Response:
    account_scope(principal, order.account)
    guard: OrderGuard = request.app.state.orders
    decision = await guard.check(order)
    return Response(decision.model_dump_json(), media_type="application/json")
