"""Shared fixtures. Real market data lives in ../shared/data: tests needing it skip locally when it is
absent and fail under CI=true, where its absence is an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip with `reason` when a dependency is missing; under CI the same absence fails the test."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    require(
        (SHARED_DATA / "binance" / "BTC_USDT-1h.feather").is_file(),
        f"real market data not found at {SHARED_DATA}",
    )
    return SHARED_DATA
