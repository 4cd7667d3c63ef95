"""Shared fixtures. Real market data lives in ../shared/data: tests needing it skip locally when it is
absent and fail under CI=true, where its absence is an error."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

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


PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture(scope="session")
def postgres_error() -> str | None:
    """None when the local PostgreSQL accepts connections, else why not."""
    try:
        with psycopg.connect(PG_ADMIN):
            return None
    except psycopg.Error as exc:
        return " ".join(str(exc).split()) or type(exc).__name__


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_error: str | None) -> Iterator[str]:
    """A URL of an empty database on each backend (a fresh PostgreSQL database, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'tradeguard.db'}"
        return
    require(postgres_error is None, f"PostgreSQL not reachable on 127.0.0.1:5432: {postgres_error}")
    name = f"tradeguard_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
