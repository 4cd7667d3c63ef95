"""`risk.thresholds_updated`: written at start when the limits in force differ from the last recorded ones."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from tests.service_kit import compose
from tradeguard.adapters.signing_key import AuditKey
from tradeguard.adapters.store import AuditLog, Store
from tradeguard.core import audit
from tradeguard.core.exposure import ExposureConfig
from tradeguard.guards.order import OrderPolicy
from tradeguard.guards.portfolio import PortfolioPolicy
from tradeguard.service.app import create_app
from tradeguard.service.thresholds import record_thresholds, thresholds_in_force

T0 = datetime(2026, 11, 21, tzinfo=UTC)


def test_recorded_once_per_change_with_previous_values_and_changed_paths(store_url):
    store = Store.open(store_url)
    try:
        log = AuditLog(store.engine, AuditKey.generate())
        first = record_thresholds(log, thresholds_in_force(PortfolioPolicy(), OrderPolicy()), T0)
        assert first is not None and first.type == audit.THRESHOLDS_UPDATED and first.account is None
        assert first.payload["previous"] is None
        assert first.payload["thresholds"]["breakers"]["global_drawdown"] == {
            "threshold": 20.0,
            "shadow": False,
        }
        assert first.payload["thresholds"]["orders"]["var_limits_pct"]["conservative"] == 8.0
        assert record_thresholds(log, thresholds_in_force(PortfolioPolicy(), OrderPolicy()), T0) is None
        # sets are recorded sorted: the same set built in another order is the same limit
        same = PortfolioPolicy(exposure=ExposureConfig(usd_pegged=frozenset(["USDT", "USDC", "DAI"])))
        assert record_thresholds(log, thresholds_in_force(same, OrderPolicy()), T0) is not None

        tighter = PortfolioPolicy(
            thresholds={"drawdown": 10.0},
            shadow=frozenset({"correlation"}),
            exposure=ExposureConfig(usd_pegged=frozenset(["DAI", "USDC", "USDT"])),
        )
        changed = record_thresholds(log, thresholds_in_force(tighter, OrderPolicy()), T0)
        assert changed is not None
        assert changed.payload["changed"] == ["breakers.correlation.shadow", "breakers.drawdown.threshold"]
        assert changed.payload["previous"]["breakers"]["drawdown"]["threshold"] == 15.0
        assert changed.payload["thresholds"]["breakers"]["drawdown"]["threshold"] == 10.0
    finally:
        store.close()


def start(tmp_path, **portfolio) -> list[dict]:
    """Start and stop the service once; the thresholds records in its audit log."""
    settings, store, engine, parts = compose(tmp_path, portfolio=portfolio)
    try:
        with TestClient(create_app(settings, engine, store, engine.metrics, portfolio=parts)):
            pass
        return parts.audit_log.query(type=audit.THRESHOLDS_UPDATED)
    finally:
        store.close()


def test_the_service_records_thresholds_at_start_and_again_only_when_they_change(tmp_path):
    assert len(start(tmp_path)) == 1
    assert len(start(tmp_path)) == 1  # a restart with the same settings
    records = start(tmp_path, breakers={"global_drawdown": {"threshold": 25.0, "shadow": True}})
    assert len(records) == 2
    assert records[-1]["payload"]["changed"] == [
        "breakers.global_drawdown.shadow",
        "breakers.global_drawdown.threshold",
    ]
