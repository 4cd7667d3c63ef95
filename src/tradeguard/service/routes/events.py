"""POST /v1/events: bots push a batch of event envelopes; 202 once the whole batch is durably stored.

Body: a JSON object `{"events": [<envelope>, ...]}` with 1 to MAX_EVENTS envelopes (an object, so the
request can grow fields later). The batch is validated whole and stored in one transaction, all or nothing:

- 202 `{"accepted": [ids], "duplicates": [ids]}`, sent after the commit: every id in either list is durable.
  `duplicates` were stored before with the same content (a retried request is safe and answers 202 again).
- 422 with `errors: [{"index", "id", "errors": [{"loc", "msg"}]}]` when some envelope is invalid (or cannot
  be stored, e.g. a non-finite number); 409 in the same shape when an id is already stored with different
  content. Nothing of the batch is stored in either case.
- 403 when a `bot` or `operator` key sends events of another account (`foreign_accounts` names them);
  `admin` keys may send for any account; `read` keys may not send.
- 413 for more than MAX_EVENTS envelopes or a body over MAX_BODY_BYTES; 503 when the store is unavailable
  (nothing was acknowledged: retry the same batch).

After the commit, `app.state.on_events` (if set: an async callable taking the newly stored events) is
awaited; its failure is logged and never turns the acknowledged write into an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from tradeguard.adapters.store.event_log import BatchRejected, EventLog, event_errors
from tradeguard.core.events import Event
from tradeguard.service.auth import Principal, require
from tradeguard.service.problems import Problem

log = logging.getLogger(__name__)

MAX_EVENTS = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024
OnEvents = Callable[[list[Event]], Awaitable[None]]

router = APIRouter(prefix="/v1", tags=["events"])

_BODY_SCHEMA = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "events": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_EVENTS,
            "items": {
                "type": "object",
                "description": "an event envelope {id, type, account, exchange, bot, ts, payload}",
            },
        }
    },
}


@router.post(
    "/events",
    status_code=202,
    summary="Push a batch of events; 202 once all of them are durably stored",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}
    },
    responses={
        202: {"description": "stored (accepted) or stored before with the same content (duplicates)"},
        403: {"description": "an event of another account (bot and operator keys)"},
        409: {"description": "an id already stored with different content; nothing stored"},
        413: {"description": "too many events or too large a body"},
        422: {"description": "invalid envelopes, each with its reasons; nothing stored"},
        503: {"description": "the store is unavailable; nothing stored"},
    },
)
async def post_events(
    request: Request, principal: Annotated[Principal, Depends(require("bot"))]
) -> JSONResponse:
    event_log: EventLog | None = getattr(request.app.state, "event_log", None)
    if event_log is None:
        raise Problem(503, "event intake is not configured on this server")
    items = _items(await _body(request))
    _check_tenancy(principal, items)
    batch, invalid = _validate(items)
    if invalid:
        raise Problem(
            422, f"{len(invalid)} of {len(items)} events are invalid; nothing was stored", errors=invalid
        )
    try:
        result = await asyncio.to_thread(event_log.store_batch, batch, datetime.now(UTC))
    except BatchRejected as exc:
        errors = [
            {
                "index": r.index,
                "id": r.id,
                "errors": [{"loc": ["id"] if r.reason == "conflict" else ["payload"], "msg": r.message}],
            }
            for r in exc.rejections
        ]
        what = "reuse stored ids with different content" if exc.conflict else "cannot be stored"
        raise Problem(
            409 if exc.conflict else 422,
            f"{len(errors)} of {len(items)} events {what}; nothing was stored",
            errors=errors,
        ) from exc
    except SQLAlchemyError as exc:
        log.exception("event batch of %d not stored: the store failed", len(batch))
        raise Problem(
            503,
            "the event store is unavailable; nothing was stored, retry the same batch",
            headers={"Retry-After": "1"},
        ) from exc
    on_events: OnEvents | None = getattr(request.app.state, "on_events", None)
    if on_events is not None and result.accepted:
        try:
            await on_events(result.accepted)
        except Exception:  # the batch is durable and acknowledged whatever a consumer does with it
            log.exception("on_events failed for %d stored events", len(result.accepted))
    return JSONResponse({"accepted": result.accepted_ids, "duplicates": result.duplicates}, status_code=202)


async def _body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Problem(413, f"the body exceeds {MAX_BODY_BYTES} bytes", max_body_bytes=MAX_BODY_BYTES)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Problem(413, f"the body exceeds {MAX_BODY_BYTES} bytes", max_body_bytes=MAX_BODY_BYTES)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise Problem(422, f"the body is not valid JSON: {exc}") from exc


def _items(document: Any) -> list[Any]:
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list) or set(document) != {"events"}:
        raise Problem(422, 'the body must be a JSON object {"events": [<envelope>, ...]}')
    if not events:
        raise Problem(422, f"the batch is empty: send 1 to {MAX_EVENTS} events")
    if len(events) > MAX_EVENTS:
        raise Problem(413, f"{len(events)} events in one batch; at most {MAX_EVENTS}", max_events=MAX_EVENTS)
    return events


def _check_tenancy(principal: Principal, items: list[Any]) -> None:
    """Keys below `admin` may only send events of their own account."""
    if principal.scope == "admin":
        return
    foreign = sorted(
        {
            item["account"]
            for item in items
            if isinstance(item, dict)
            and isinstance(item.get("account"), str)
            and item["account"] != principal.account
        }
    )
    if foreign:
        raise Problem(
            403,
            f"this key belongs to account {principal.account!r}; it may not send events of "
            f"{', '.join(repr(a) for a in foreign)}",
            foreign_accounts=foreign,
        )


def _validate(items: list[Any]) -> tuple[list[Event], list[dict[str, Any]]]:
    batch: list[Event] = []
    invalid: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            batch.append(Event.model_validate(item))
        except ValueError:  # pydantic's ValidationError; event_errors gives the full list with paths
            item_id = item.get("id") if isinstance(item, dict) else None
            invalid.append(
                {
                    "index": index,
                    "id": item_id if isinstance(item_id, str) else None,
                    "errors": event_errors(item),
                }
            )
    return batch, invalid
