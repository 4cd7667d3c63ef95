"""POST /v1/orders/check: the pre-trade check of one order (see `guards.order` for the checks).

A `bot` key may check orders of its own account only (403 otherwise; `admin` keys any account). The answer is
always 200 with a decision — a failing dependency is a decision too (`check_error:<check>`: block in live
mode, listed in paper mode); 422 for a malformed order.

The hot path reads its key and body directly rather than through FastAPI's dependency solver and body
parsing, which cost more than the check itself (bench/bench_order_check.py); the contract and the OpenAPI
schema are the same.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from tradeguard.core.order_check import OrderDecision, OrderRequest
from tradeguard.guards.order import OrderGuard
from tradeguard.service.auth import account_scope, require

router = APIRouter(prefix="/v1", tags=["orders"])

_bot = require("bot")


@router.post(
    "/orders/check",
    response_model=OrderDecision,
    summary="Check one order before it goes out: allow, reduce, delay or block, with every check's outcome",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": OrderRequest.model_json_schema()}},
        }
    },
)
async def check_order(request: Request) -> Response:
    principal = await _bot(request)
    try:
        order = OrderRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    account_scope(principal, order.account)
    guard: OrderGuard = request.app.state.orders
    decision = await guard.check(order)
    return Response(decision.model_dump_json(), media_type="application/json")
