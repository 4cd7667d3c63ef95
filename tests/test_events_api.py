"""POST /v1/events: 202 after the commit, all-or-nothing validation, tenancy, idempotent retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.service_kit import build
from tests.test_event_log import envelope
from tradeguard.adapters.store import Store
from tradeguard.adapters.store.event_log import EventLog, equity_history, events
from tradeguard.adapters.store.schema import metadata
from tradeguard.core.events import Event
from tradeguard.service.routes import events as events_route


def build_with_events(tmp_path: Path) -> tuple[FastAPI, Store, EventLog]:
    """The service app (tests/service_kit.build) with the event intake wired as the lead wires it."""
    app, _engine, store, _feed = build(tmp_path)
    if not any(getattr(route, "path", None) == "/v1/events" for route in app.routes):
        app.include_router(events_route.router)
    metadata.create_all(store.engine, tables=[events, equity_history])  # no-op once migrations create them
    event_log = EventLog(store.engine)
    app.state.event_log = event_log
    return app, store, event_log


@dataclass
class Service:
    client: TestClient
    store: Store
    log: EventLog
    app: FastAPI
    keys: dict[str, str]

    def post(self, body: Any, key: str = "bot", **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        if isinstance(body, bytes):
            return self.client.post(
                "/v1/events", content=body, headers=headers | {"content-type": "application/json"}
            )
        return self.client.post("/v1/events", json=body, headers=headers, **kw)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    app, store, log = build_with_events(tmp_path)
    now = datetime.now(UTC)
    keys = {s: store.create_key("acme", s, now=now).token for s in ("read", "bot", "operator", "admin")}
    keys["globex_bot"] = store.create_key("globex", "bot", now=now).token
    with TestClient(app) as client:
        yield Service(client, store, log, app, keys)
    store.close()


def batch(*indexes: int, **kw: Any) -> dict[str, Any]:
    return {"events": [envelope(i, **kw) for i in indexes]}


def test_a_batch_is_stored_and_acknowledged_after_the_commit(service: Service) -> None:
    seen: list[tuple[list[str], bool]] = []
    other = EventLog(service.store.engine)

    async def on_events(stored: list[Event]) -> None:
        # Another connection sees the events: the commit happened before the callback (and the 202).
        seen.append(([e.id for e in stored], all(other.get(e.account, e.id) == e for e in stored)))

    service.app.state.on_events = on_events
    body = batch(0, 1)
    body["events"].append(envelope(2, "positions"))
    r = service.post(body)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": ["e0", "e1", "e2"], "duplicates": []}
    assert seen == [(["e0", "e1", "e2"], True)]
    assert service.log.get("acme", "e2") == Event.model_validate(envelope(2, "positions"))
    assert [p.event_id for p in service.log.equity_history("acme")] == ["e0", "e1"]


def test_a_retried_batch_is_acknowledged_as_duplicates(service: Service) -> None:
    calls: list[list[str]] = []

    async def on_events(stored: list[Event]) -> None:
        calls.append([e.id for e in stored])

    service.app.state.on_events = on_events
    assert service.post(batch(0, 1)).json() == {"accepted": ["e0", "e1"], "duplicates": []}
    again = service.post(batch(0, 1, 2))
    assert again.status_code == 202
    assert again.json() == {"accepted": ["e2"], "duplicates": ["e0", "e1"]}
    assert calls == [["e0", "e1"], ["e2"]]  # only newly stored events are passed on
    assert service.log.count() == 3


def test_invalid_events_are_reported_each_and_nothing_is_stored(service: Service) -> None:
    body = batch(0, 1, 2, 3)
    body["events"][1]["payload"]["total_equity"] = -5
    body["events"][1]["ts"] = "2024-03-01T12:00:00"  # no time zone
    body["events"][3] = {"id": "e3", "type": "margin_call"}
    r = service.post(body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["detail"] == "2 of 4 events are invalid; nothing was stored"
    first, second = problem["errors"]
    assert first["index"] == 1 and first["id"] == "e1"
    assert {tuple(e["loc"]) for e in first["errors"]} == {("payload", "total_equity"), ("ts",)}
    assert second["index"] == 3 and second["id"] == "e3"
    assert ("type",) in {tuple(e["loc"]) for e in second["errors"]}
    assert all(e["msg"] for e in first["errors"] + second["errors"])
    assert service.log.count() == 0


def test_unstorable_numbers_are_422_and_nothing_is_stored(service: Service) -> None:
    body = json.dumps(batch(0, 1)).replace('"total_equity": 1001.0', '"total_equity": Infinity')
    r = service.post(body.encode())
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["index"] == 1 and "finite" in error["errors"][0]["msg"]
    assert service.log.count() == 0


def test_a_reused_id_with_other_content_is_409_and_nothing_is_stored(service: Service) -> None:
    assert service.post(batch(0)).status_code == 202
    body = batch(1, 0)
    body["events"][1]["payload"]["total_equity"] = 1.0
    r = service.post(body)
    assert r.status_code == 409
    assert r.json()["errors"] == [
        {
            "index": 1,
            "id": "e0",
            "errors": [{"loc": ["id"], "msg": "id already stored with different content"}],
        }
    ]
    assert service.log.count() == 1 and service.log.get("acme", "e1") is None


@pytest.mark.parametrize("key", ["bot", "operator"])
def test_keys_cannot_write_another_account(service: Service, key: str) -> None:
    body = batch(0)
    body["events"].append(envelope(1, account="globex"))
    r = service.post(body, key=key)
    assert r.status_code == 403
    assert r.json()["foreign_accounts"] == ["globex"] and "'globex'" in r.json()["detail"]
    assert service.log.count() == 0
    # ... and the other account's bot key cannot write acme's events either.
    assert service.post(batch(0), key="globex_bot").status_code == 403
    assert service.post(batch(0, account="globex"), key="globex_bot").status_code == 202


def test_read_keys_and_anonymous_callers_cannot_post(service: Service) -> None:
    assert service.post(batch(0), key="read").status_code == 403
    assert service.post(batch(0), key="").status_code == 401
    assert service.log.count() == 0


def test_admin_keys_may_post_for_any_account(service: Service) -> None:
    body = batch(0)
    body["events"].append(envelope(0, account="globex"))
    r = service.post(body, key="admin")
    assert r.status_code == 202 and r.json()["accepted"] == ["e0", "e0"]
    assert service.log.count("acme") == 1 and service.log.count("globex") == 1


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ([envelope(0)], 422, "JSON object"),
        ({"events": []}, 422, "empty"),
        ({"events": [envelope(0)], "extra": 1}, 422, "JSON object"),
        (b'{"events": [', 422, "not valid JSON"),
        ({"events": [envelope(i) for i in range(events_route.MAX_EVENTS + 1)]}, 413, "at most 1000"),
    ],
)
def test_malformed_bodies(service: Service, body: Any, status: int, detail: str) -> None:
    r = service.post(body)
    assert r.status_code == status and detail in r.json()["detail"]
    assert service.log.count() == 0


def test_oversized_bodies_are_413(service: Service) -> None:
    body = b'{"events": [' + b" " * events_route.MAX_BODY_BYTES + b"]}"
    assert service.post(body).status_code == 413


def test_a_failing_callback_does_not_undo_an_acknowledged_write(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    async def on_events(stored: list[Event]) -> None:
        raise RuntimeError("portfolio guard crashed")

    service.app.state.on_events = on_events
    r = service.post(batch(0))
    assert r.status_code == 202 and r.json()["accepted"] == ["e0"]
    assert service.log.count() == 1
    assert "on_events failed" in caplog.text


def test_a_store_failure_is_503_and_acknowledges_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(service.log, "store_batch", broken)
    r = service.post(batch(0))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    monkeypatch.undo()
    assert service.log.count() == 0
    assert service.post(batch(0)).status_code == 202


def test_without_an_event_log_the_route_is_503(service: Service) -> None:
    del service.app.state.event_log
    assert service.post(batch(0)).status_code == 503
