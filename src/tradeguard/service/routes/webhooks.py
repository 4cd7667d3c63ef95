"""Webhook endpoints (operator scope): register, change, rotate, test, and read their delivery logs.

Tenancy: a webhook belongs to one account; a key of account A naming account B gets 403, and a webhook or
delivery of another account is a 404 (its id tells nothing). Admin keys see every webhook, and alone manage
fleet webhooks (account `*`, which receive every account's events). Secrets are shown on create and rotate
only.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tradeguard.adapters.store.outbox import Delivery, delivery_id
from tradeguard.adapters.store.webhooks import FLEET, Webhook
from tradeguard.adapters.webhooks.parts import WebhookParts
from tradeguard.core.audit import WEBHOOK_TEST
from tradeguard.errors import InputError
from tradeguard.service.auth import Operator, Principal, account_scope
from tradeguard.service.problems import Problem

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Account = Annotated[str | None, Query(description="default: the key's own; admin keys: any, or '*' (fleet)")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookCreate(_Body):
    url: str = Field(description="http:// or https:// URL the deliveries are POSTed to")
    event_types: list[str] = Field(description="patterns, e.g. ['risk.breaker.*', 'risk.kill_switch']")
    secret: str | None = Field(None, description="whsec_ + base64 of 24 to 64 bytes (default: generated)")
    description: str | None = Field(None, max_length=500)
    account: str | None = Field(None, description="default: the key's own; admin keys: any, or '*' (fleet)")


class WebhookUpdate(_Body):
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = Field(None, description="true re-enables a disabled webhook and resumes its queue")


class SecretRotation(_Body):
    secret: str | None = Field(None, description="the new secret (default: generated)")


def _parts(request: Request) -> WebhookParts:
    return request.app.state.webhooks


def _now() -> datetime:
    return datetime.now(UTC)


def _owner(principal: Principal, requested: str | None) -> str:
    if requested == FLEET:
        if principal.scope != "admin":
            raise Problem(403, "only admin keys manage fleet webhooks (account '*')")
        return FLEET
    return account_scope(principal, requested)


async def _webhook(request: Request, principal: Principal, webhook_id: str) -> Webhook:
    hook = await asyncio.to_thread(_parts(request).store.get, webhook_id)
    if hook is None or (principal.scope != "admin" and hook.account != principal.account):
        raise Problem(404, f"no webhook {webhook_id!r}")
    return hook


async def _delivery(request: Request, principal: Principal, delivery: str) -> tuple[Delivery, Webhook]:
    found = await asyncio.to_thread(_parts(request).outbox.get, delivery)
    if found is None:
        raise Problem(404, f"no delivery {delivery!r}")
    try:
        return found, await _webhook(request, principal, found.webhook_id)
    except Problem:
        raise Problem(404, f"no delivery {delivery!r}") from None


def _shown(hook: Webhook, **extra: Any) -> dict[str, Any]:
    return {**hook.to_dict(_now()), **extra}


@router.post("", status_code=201, summary="Register a webhook (the secret is shown only in this answer)")
async def create(request: Request, body: WebhookCreate, principal: Operator) -> JSONResponse:
    account = _owner(principal, body.account)
    try:
        hook = await asyncio.to_thread(
            _parts(request).store.create,
            account,
            body.url,
            body.event_types,
            now=_now(),
            description=body.description,
            secret=body.secret,
        )
    except InputError as exc:
        raise Problem(422, str(exc)) from exc
    return JSONResponse(_shown(hook, secret=hook.secret), status_code=201)


@router.get("", summary="The webhooks of an account")
async def list_webhooks(request: Request, principal: Operator, account: Account = None) -> JSONResponse:
    name = _owner(principal, account)
    hooks = await asyncio.to_thread(_parts(request).store.list, name)
    return JSONResponse({"account": name, "webhooks": [_shown(h) for h in hooks]})


@router.get("/deliveries/{delivery}", summary="One delivery, with the exact body sent")
async def get_delivery(request: Request, delivery: str, principal: Operator) -> JSONResponse:
    found, _ = await _delivery(request, principal, delivery)
    return JSONResponse(found.to_dict())


@router.post(
    "/deliveries/{delivery}/redeliver", status_code=202, summary="Send a delivery again (same webhook-id)"
)
async def redeliver(request: Request, delivery: str, principal: Operator) -> JSONResponse:
    _, hook = await _delivery(request, principal, delivery)
    if not hook.enabled:
        raise Problem(409, f"webhook {hook.id} is disabled ({hook.disabled_reason}): enable it first")
    parts = _parts(request)
    again = await asyncio.to_thread(parts.outbox.redeliver, delivery, _now())
    if again is None:
        raise Problem(404, f"no delivery {delivery!r}")
    parts.outbox.wake()
    return JSONResponse(again.to_dict(), status_code=202)


@router.get("/{webhook_id}", summary="One webhook")
async def get_webhook(request: Request, webhook_id: str, principal: Operator) -> JSONResponse:
    return JSONResponse(_shown(await _webhook(request, principal, webhook_id)))


@router.patch("/{webhook_id}", summary="Change a webhook's URL, event types or description; enable/disable")
async def update(request: Request, webhook_id: str, body: WebhookUpdate, principal: Operator) -> JSONResponse:
    await _webhook(request, principal, webhook_id)
    parts = _parts(request)
    try:
        hook = await asyncio.to_thread(
            parts.store.update,
            webhook_id,
            now=_now(),
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            enabled=body.enabled,
            disabled_reason=f"disabled by key {principal.key_id}",
        )
    except InputError as exc:
        raise Problem(422, str(exc)) from exc
    if hook is None:
        raise Problem(404, f"no webhook {webhook_id!r}")
    if body.enabled:
        parts.outbox.wake()  # its parked deliveries are due: wake the worker
    return JSONResponse(_shown(hook))


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook and its delivery log")
async def delete(request: Request, webhook_id: str, principal: Operator) -> Response:
    await _webhook(request, principal, webhook_id)
    await asyncio.to_thread(_parts(request).store.delete, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", summary="New secret; the old one keeps signing for the overlap")
async def rotate_secret(
    request: Request, webhook_id: str, principal: Operator, body: SecretRotation | None = None
) -> JSONResponse:
    await _webhook(request, principal, webhook_id)
    parts = _parts(request)
    try:
        hook = await asyncio.to_thread(
            parts.store.rotate_secret,
            webhook_id,
            now=_now(),
            overlap=parts.rotation_overlap,
            secret=body.secret if body is not None else None,
        )
    except InputError as exc:
        raise Problem(422, str(exc)) from exc
    if hook is None:
        raise Problem(404, f"no webhook {webhook_id!r}")
    return JSONResponse(_shown(hook, secret=hook.secret))


@router.post("/{webhook_id}/test", summary="Send a signed risk.webhook_test event to this webhook now")
async def test(request: Request, webhook_id: str, principal: Operator) -> JSONResponse:
    """Answers 200 with the delivery once its first attempt is stored, or 202 if that takes too long."""
    hook = await _webhook(request, principal, webhook_id)
    if not hook.enabled:
        raise Problem(409, f"webhook {hook.id} is disabled ({hook.disabled_reason}): enable it first")
    parts = _parts(request)
    payload = {"webhook_id": hook.id, "by": principal.key_id, "message": "test delivery"}
    record = await asyncio.to_thread(
        request.app.state.audit_log.append, WEBHOOK_TEST, hook.account, payload, _now()
    )
    sent = delivery_id(record.seq, hook.id)
    attempted = parts.worker.watch(sent)
    found = await asyncio.to_thread(parts.outbox.get, sent)
    if found is not None and found.attempts == 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempted, parts.worker.policy.timeout_s + 5.0)
        found = await asyncio.to_thread(parts.outbox.get, sent)
    attempted.cancel()
    if found is None:
        raise Problem(404, f"webhook {webhook_id!r} was deleted meanwhile")
    return JSONResponse(found.to_dict(), status_code=200 if found.attempts else 202)


@router.get("/{webhook_id}/deliveries", summary="A webhook's delivery log, newest first")
async def deliveries(
    request: Request,
    webhook_id: str,
    principal: Operator,
    status: Literal["pending", "succeeded", "failed", "dead"] | None = None,
    before_seq: Annotated[int | None, Query(ge=1, description="page: the last audit_seq received")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    await _webhook(request, principal, webhook_id)
    found = await asyncio.to_thread(
        _parts(request).outbox.deliveries, webhook_id, status=status, before_seq=before_seq, limit=limit
    )
    return JSONResponse(
        {
            "webhook_id": webhook_id,
            "deliveries": [d.to_dict() for d in found],
            "next_before_seq": found[-1].audit_seq if len(found) == limit else None,
        }
    )
