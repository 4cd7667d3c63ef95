"""The audit trail over HTTP: records (signed, hash-chained envelopes) and the key to verify them."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tradeguard.errors import InputError
from tradeguard.service.auth import Reader, account_scope
from tradeguard.service.problems import Problem

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", summary="Audit records of an account, oldest first (page with after_seq)")
async def audit(
    request: Request,
    principal: Reader,
    account: Annotated[str | None, Query(description="default: the key's own; any for admin keys")] = None,
    type: Annotated[str | None, Query(description="e.g. risk.breaker.transition")] = None,
    since: Annotated[datetime | None, Query(description="ISO-8601; records with ts >= since")] = None,
    after_seq: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> JSONResponse:
    name = account_scope(principal, account)
    if since is not None and since.tzinfo is None:
        raise Problem(422, "since must carry a timezone, e.g. 2024-01-01T00:00:00Z")
    try:
        records = await asyncio.to_thread(
            request.app.state.audit_log.query, name, type, since, after_seq=after_seq, limit=limit
        )
    except InputError as exc:
        raise Problem(400, str(exc)) from exc
    return JSONResponse({"account": name, "records": records})


@router.get("/public-key", summary="The Ed25519 public key that signs the audit records")
async def public_key(request: Request, _: Reader) -> JSONResponse:
    return JSONResponse(request.app.state.audit_key.public_document())
