"""Maintenance-margin brackets (ccxt "leverage tiers") for the liquidation calculator.

Live: ccxt ``fetch_leverage_tiers`` on an exchange object the caller built and configured (on Binance
USDⓈ-M it calls the *signed* ``GET /fapi/v1/leverageBracket``, so it needs API keys). Fallback: the
bundled, dated snapshot of Binance USDⓈ-M brackets (``tradeguard/data/binance_usdm_leverage_tiers.json``),
used for Binance ids when the exchange has no keys, refuses (``AuthenticationError``, which includes
``PermissionDenied``) or does not support the call (``NotSupported``); symbols the exchange did not return
are filled from it too. Other ccxt errors (network, rate limit, exchange down) raise ``ExchangeError``: the
caller retries rather than silently degrading. Every table is checked (:func:`check_tiers`); problems are
reported in :class:`LoadedTiers`, not hidden.

ccxt's tier structure: ``{tier, symbol, currency, minNotional, maxNotional, maintenanceMarginRate,
maxLeverage, info}``; Binance's maintenance amount is ``info["cum"]`` (Bybit: ``info["mmDeduction"]``).
When no tier carries one it is derived from rates and floors (Binance's recurrence). Note: some exchanges
(OKX) express ``minNotional``/``maxNotional`` in contracts, not in the settle currency.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import ccxt
from pydantic import ValidationError

from tradeguard.adapters.exchange_download import brief_error
from tradeguard.core.liquidation import (
    BINANCE_USDM_IDS,
    Tier,
    check_tiers,
    derive_maintenance_amounts,
    tiers_for,
)
from tradeguard.errors import DataFormatError, ExchangeError

log = logging.getLogger(__name__)

SNAPSHOT_PACKAGE = "tradeguard.data"
SNAPSHOT_FILE = "binance_usdm_leverage_tiers.json"
# A maxNotional this large (Binance sends 2^63 - 1) means "no cap".
_UNBOUNDED = 1e18
_CUM_KEYS = ("cum", "mmDeduction")
# ccxt ids the bundled Binance USDⓈ-M snapshot may stand in for.
SNAPSHOT_EXCHANGES = BINANCE_USDM_IDS

Source = Literal["exchange", "snapshot", "mixed", "none"]


@dataclass(frozen=True)
class TierSnapshot:
    """The bundled brackets: ``tiers`` by ccxt unified symbol, with their date and provenance."""

    as_of: date
    source: str
    exchange: str
    tiers: dict[str, list[Tier]]
    ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedTiers:
    """Brackets by symbol and where they came from.

    ``snapshot_symbols`` were served from the snapshot dated ``snapshot_as_of``; ``fallback_reason`` says
    why the exchange was not (fully) used; ``problems`` lists failed consistency checks per symbol.
    """

    tiers: dict[str, list[Tier]]
    source: Source
    snapshot_as_of: date | None = None
    snapshot_symbols: tuple[str, ...] = ()
    fallback_reason: str | None = None
    problems: dict[str, list[str]] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"not a number: {value!r}") from exc


def _cum(entry: Mapping[str, Any]) -> float | None:
    info = entry.get("info")
    if not isinstance(info, Mapping):
        return None
    for key in _CUM_KEYS:
        value = _number(info.get(key))
        if value is not None:
            return value
    return None


def tier_from_ccxt(entry: Mapping[str, Any], maintenance_amount: float | None = None) -> Tier:
    """One ccxt leverage-tier dict as a :class:`Tier` (``maintenance_amount`` overrides ``info.cum``)."""
    rate = _number(entry.get("maintenanceMarginRate"))
    if rate is None:
        raise DataFormatError(f"leverage tier without maintenanceMarginRate: {dict(entry)!r}")
    cap = _number(entry.get("maxNotional"))
    tier = _number(entry.get("tier"))
    cum = maintenance_amount if maintenance_amount is not None else _cum(entry)
    try:
        return Tier(
            tier=int(tier) if tier is not None else None,
            notional_floor=_number(entry.get("minNotional")) or 0.0,
            notional_cap=None if cap is None or cap >= _UNBOUNDED else cap,
            maintenance_margin_rate=rate,
            maintenance_amount=cum or 0.0,
            max_leverage=_number(entry.get("maxLeverage")),
        )
    except ValidationError as exc:
        raise DataFormatError(f"invalid leverage tier {dict(entry)!r}: {exc.errors()[0]['msg']}") from exc


def tiers_from_ccxt(entries: Sequence[Mapping[str, Any]]) -> list[Tier]:
    """A market's ccxt leverage tiers as brackets (ascending); missing ``cum`` derived from the rates."""
    tiers = sorted((tier_from_ccxt(e) for e in entries), key=lambda t: t.notional_floor)
    if tiers and any(_cum(e) is None for e in entries):
        tiers = derive_maintenance_amounts(tiers)
    return tiers


def tiers_by_symbol_from_ccxt(raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[Tier]]:
    """ccxt ``fetch_leverage_tiers`` output (unified symbol -> tiers) as brackets by symbol."""
    out: dict[str, list[Tier]] = {}
    for symbol, entries in raw.items():
        try:
            tiers = tiers_from_ccxt(entries)
        except DataFormatError as exc:
            raise DataFormatError(f"{symbol}: {exc}") from exc
        if tiers:
            out[symbol] = tiers
    return out


def load_snapshot(path: Path | None = None) -> TierSnapshot:
    """The bundled Binance USDⓈ-M snapshot (or the snapshot-format file at ``path``)."""
    try:
        if path is None:
            text = resources.files(SNAPSHOT_PACKAGE).joinpath(SNAPSHOT_FILE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text)
        tiers = {
            symbol: sorted((Tier(**t) for t in body["tiers"]), key=lambda t: t.notional_floor)
            for symbol, body in doc["symbols"].items()
        }
        ids = {body["id"]: symbol for symbol, body in doc["symbols"].items() if body.get("id")}
        return TierSnapshot(
            as_of=date.fromisoformat(doc["as_of"]),
            source=str(doc["source"]),
            exchange=str(doc.get("exchange", "binanceusdm")),
            tiers=tiers,
            ids=ids,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = path or f"{SNAPSHOT_PACKAGE}/{SNAPSHOT_FILE}"
        raise DataFormatError(f"leverage-tier snapshot {where}: {exc}") from exc


def _skip_reason(exchange: Any) -> str | None:
    """Why ``fetch_leverage_tiers`` should not be called at all (None: call it)."""
    if not exchange.has.get("fetchLeverageTiers"):
        return f"{exchange.id} has no fetchLeverageTiers"
    if exchange.id in BINANCE_USDM_IDS and not exchange.check_required_credentials(False):
        return f"{exchange.id}: no API keys (the leverage-bracket endpoint is signed)"
    return None


def _assemble(
    exchange_id: str,
    raw: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    symbols: Sequence[str] | None,
    reason: str | None,
    snapshot: TierSnapshot | None,
) -> LoadedTiers:
    fetched = tiers_by_symbol_from_ccxt(raw) if raw else {}
    tiers: dict[str, list[Tier]] = dict(fetched)
    if not fetched and reason is None:
        reason = f"{exchange_id} returned no leverage tiers"
    wanted = list(symbols) if symbols else None
    missing = [s for s in wanted if tiers_for(s, tiers) is None] if wanted is not None else []
    use_snapshot = exchange_id in SNAPSHOT_EXCHANGES and (not fetched or bool(missing))
    served: list[str] = []
    snap_date: date | None = None
    if use_snapshot:
        snap = snapshot or load_snapshot()
        snap_date = snap.as_of
        for symbol in missing if wanted is not None else list(snap.tiers):
            found = tiers_for(symbol, snap.tiers)
            if found is not None:
                tiers[symbol] = list(found)
                served.append(symbol)
        if fetched and missing:
            reason = f"{exchange_id} returned no leverage tiers for {', '.join(missing)}"
        log.warning(
            "leverage tiers: %s; using the bundled snapshot dated %s for %s",
            reason,
            snap.as_of.isoformat(),
            ", ".join(served) or "no symbol",
        )
    elif reason is not None:
        log.warning("leverage tiers: %s; no snapshot for %s", reason, exchange_id)
    source: Source
    if served and fetched:
        source = "mixed"
    elif served:
        source = "snapshot"
    elif fetched:
        source = "exchange"
    else:
        source = "none"
    problems = {s: p for s, t in tiers.items() if (p := check_tiers(t))}
    for symbol, found in problems.items():
        log.warning("leverage tiers for %s are inconsistent: %s", symbol, "; ".join(found))
    return LoadedTiers(
        tiers=tiers,
        source=source,
        snapshot_as_of=snap_date if served else None,
        snapshot_symbols=tuple(served),
        fallback_reason=reason,
        problems=problems,
    )


def load_leverage_tiers(
    exchange: ccxt.Exchange, symbols: Sequence[str] | None = None, *, snapshot: TierSnapshot | None = None
) -> LoadedTiers:
    """Brackets for ``symbols`` (all when None) from a built sync ccxt exchange, else the snapshot."""
    reason = _skip_reason(exchange)
    raw = None
    if reason is None:
        try:
            raw = exchange.fetch_leverage_tiers(list(symbols) if symbols else None)
        except (ccxt.AuthenticationError, ccxt.NotSupported) as exc:
            reason = f"{type(exc).__name__}: {brief_error(exc)}"
        except ccxt.BaseError as exc:
            raise ExchangeError(f"{exchange.id} fetch_leverage_tiers: {brief_error(exc)}") from exc
    return _assemble(exchange.id, raw, symbols, reason, snapshot)


async def aload_leverage_tiers(
    exchange: Any, symbols: Sequence[str] | None = None, *, snapshot: TierSnapshot | None = None
) -> LoadedTiers:
    """:func:`load_leverage_tiers` for a ``ccxt.async_support`` exchange."""
    reason = _skip_reason(exchange)
    raw = None
    if reason is None:
        try:
            raw = await exchange.fetch_leverage_tiers(list(symbols) if symbols else None)
        except (ccxt.AuthenticationError, ccxt.NotSupported) as exc:
            reason = f"{type(exc).__name__}: {brief_error(exc)}"
        except ccxt.BaseError as exc:
            raise ExchangeError(f"{exchange.id} fetch_leverage_tiers: {brief_error(exc)}") from exc
    return _assemble(exchange.id, raw, symbols, reason, snapshot)
