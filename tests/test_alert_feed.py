"""The alert feed: audit records reach the alert channels once, in order, across restarts and replicas."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes.fake_alert_apis import FakeSlack
from tests.service_kit import ManualClock as Clock
from tests.service_kit import compose
from tradeguard.adapters.alerts import RetryPolicy, SlackChannel, SlackConfig
from tradeguard.adapters.alerts.feed import AlertFeed
from tradeguard.adapters.alerts.notifier import Notifier
from tradeguard.adapters.signing_key import AuditKey
from tradeguard.adapters.store import AuditLog, ReadCursor, Store
from tradeguard.core import audit
from tradeguard.core.alerting import AlertRouter, FatiguePolicy, RoutingRule
from tradeguard.service.app import create_app
from tradeguard.service.kernel import build_alerts

KEY = AuditKey.generate()
T0 = datetime(2026, 11, 21, 12, tzinfo=UTC)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


def feed(store: Store, slack: FakeSlack, clock: Clock, **options: Any) -> AlertFeed:
    """A feed into Slack that sends every alert at once (no dedup or grouping to hide a duplicate)."""
    router = AlertRouter(
        ["slack"],
        {"*": [RoutingRule(channels=("slack",))]},
        {},
        FatiguePolicy(dedup_window_s=0, group_window_s=0, rate_limit_per_min=10_000, rate_limit_burst=1_000),
    )
    channel = SlackChannel(SlackConfig(webhook_url=slack.webhook_url), RetryPolicy(attempts=1, timeout_s=2))
    notifier = Notifier(router, [channel], clock=clock)
    return AlertFeed(
        AuditLog(store.engine, KEY), ReadCursor(store.engine, "alerts"), notifier, clock, **options
    )


def trip(log: AuditLog, breaker: str, at: datetime) -> audit.AuditRecord:
    payload = {
        "breaker_id": breaker,
        "kind": "drawdown",
        "to_state": "open",
        "value": 16.0,
        "threshold": 15.0,
    }
    return log.append(audit.BREAKER_TRANSITION, "alpha", payload, at)


def sent(slack: FakeSlack) -> list[str]:
    return [json.dumps(body) for body in slack.bodies()]  # text and blocks


def test_history_is_not_paged_and_new_records_are_sent_once_in_order(store, slack):
    clock = Clock(T0)
    log = AuditLog(store.engine, KEY)
    trip(log, "old", T0)
    alerts = feed(store, slack, clock)
    assert asyncio.run(alerts.start()) == 1  # the cursor starts at the head: history never pages
    trip(log, "b1", T0)
    log.append(audit.AGGREGATE_SNAPSHOT, "alpha", {"equity": 1.0}, T0)  # evidence only: no alert
    trip(log, "b2", T0)
    assert asyncio.run(alerts.poll()) == 2
    texts = sent(slack)
    assert (
        len(texts) == 2
        and "b1" in texts[0]
        and "b2" in texts[1]
        and not any("breakers/old/" in t for t in texts)
    )
    assert asyncio.run(alerts.poll()) == 0 and len(slack.bodies()) == 2
    assert alerts.cursor.get() == 4  # past the snapshot too


def test_a_restart_resumes_at_the_cursor_and_skips_what_is_too_old(store, slack):
    clock = Clock(T0)
    log = AuditLog(store.engine, KEY)
    asyncio.run(feed(store, slack, clock).start())
    trip(log, "while-down", T0)
    trip(log, "last-week", T0 - timedelta(days=7))
    restarted = feed(store, slack, clock, max_age=timedelta(minutes=15))
    assert asyncio.run(restarted.start()) == 0  # the cursor is kept, not moved to the head
    assert asyncio.run(restarted.poll()) == 1
    assert restarted.skipped == 1
    assert len(slack.bodies()) == 1 and "while-down" in sent(slack)[0]


def test_replicas_sharing_the_cursor_send_each_record_once(store, slack):
    clock = Clock(T0)
    log = AuditLog(store.engine, KEY)
    replicas = [feed(store, slack, clock, batch=3), feed(store, slack, clock, batch=3)]
    asyncio.run(replicas[0].start())
    for i in range(20):
        trip(log, f"b{i}", T0)

    async def race() -> list[int]:
        return list(await asyncio.gather(*(r.poll() for r in replicas)))

    assert sum(asyncio.run(race())) == 20
    texts = sent(slack)
    assert sorted(texts) == sorted({*texts}) and len(texts) == 20  # every breaker once, none twice
    assert replicas[0].cursor.get() == 20


def test_a_cursor_placed_by_another_reader_first_stands(store):
    mine, theirs = ReadCursor(store.engine, "alerts"), ReadCursor(store.engine, "alerts")
    assert theirs.start_at(7, T0) == 7
    assert mine.start_at(3, T0) == 7  # placed already: kept
    assert mine.advance(7, 9, T0) and not theirs.advance(7, 12, T0)  # the second claim of 7 loses
    assert theirs.get() == 9


def test_the_service_pages_a_kill_switch_through_the_configured_channel(tmp_path, slack):
    settings, store, engine, parts = compose(
        tmp_path, alerts={"slack": {"webhook_url": slack.webhook_url}, "service_url": "https://guard.example"}
    )
    metrics = engine.metrics
    parts.alerts = build_alerts(settings, parts.audit_log, metrics)
    operator = store.create_key("alpha", "operator", now=datetime.now(UTC)).token
    try:
        with TestClient(create_app(settings, engine, store, metrics, portfolio=parts)) as client:
            auth = {"Authorization": f"Bearer {operator}"}
            r = client.post("/v1/kill-switch", json={"engaged": True, "reason": "drill"}, headers=auth)
            assert r.status_code == 200
            deadline = time.monotonic() + 10
            while not slack.bodies() and time.monotonic() < deadline:
                time.sleep(0.05)
            text = sent(slack)[0]
            assert "alpha" in text and "drill" in text and "https://guard.example/v1/kill-switch" in text
            scraped = client.get("/metrics", headers=auth).text
            assert 'tradeguard_alert_messages_total{channel="slack",outcome="ok"} 1.0' in scraped
    finally:
        store.close()
