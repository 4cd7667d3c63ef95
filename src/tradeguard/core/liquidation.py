"""Liquidation price and distance of open positions (pure: no I/O, no clock).

**Binance USDⓈ-M, one-way mode** (Binance FAQ "How to Calculate Liquidation Price of USDⓈ-M Futures
Contracts"). The margin balance at price P equals the maintenance margin at P::

    WB + UPNL₁ + side·Q·(P − EP) = TMM₁ + Q·P·MMR − cum

    LP = (WB − TMM₁ + UPNL₁ + cum − side·Q·EP) / (Q·MMR − side·Q)

with side = +1 long / −1 short, Q = |size| in base units (contracts x contract size), EP the entry price
and MMR / cum (maintenance amount) of the position's bracket. Cross margin: WB is the cross wallet balance
and TMM₁ / UPNL₁ are the maintenance margin and unrealized PnL of every *other* cross position. Isolated
margin: WB is the position's isolated wallet balance (its margin without unrealized PnL), TMM₁ = UPNL₁ = 0.

Brackets are chosen by notional: bracket i holds floor < N ≤ cap (Binance's tables). The first guess uses
the position's current notional; when the notional *at* the liquidation price (Q·LP) falls in another
bracket, the price is recomputed with that bracket until it is stable (bounded; a scan of every bracket
settles the rare cycle). Because ``cum`` makes the maintenance margin continuous in the notional, exactly
one bracket is self-consistent.

**Other exchanges** use the generic formula, the same equation with cum = 0 and only the position's own
collateral: ``LP = (collateral − side·Q·EP) / (Q·MMR − side·Q)``.

Distances are percentages (0-100 scale; a short can need more than +100 %): how far the mark price must
move against the position to reach the liquidation price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradeguard.core.events import Position
from tradeguard.errors import InputError

Side = Literal["long", "short"]
Status = Literal["safe", "warning", "critical", "unknown"]
Formula = Literal["binance_usdm_cross", "binance_usdm_isolated", "generic", "exchange_reported", "none"]

STATUSES: tuple[Status, ...] = ("safe", "warning", "critical", "unknown")
WARNING_PCT = 20.0
CRITICAL_PCT = 10.0
# ccxt ids whose linear contracts follow the Binance USDⓈ-M formula.
BINANCE_USDM_IDS = frozenset({"binance", "binanceusdm"})


class Tier(BaseModel):
    """One maintenance-margin bracket: notional in (floor, cap] in the settle currency.

    ``maintenance_amount`` is Binance's ``cum``: maintenance margin = notional x rate − maintenance amount.
    ``notional_cap`` None means unbounded.
    """

    model_config = ConfigDict(frozen=True)

    tier: int | None = None
    notional_floor: float = Field(ge=0)
    notional_cap: float | None = None
    maintenance_margin_rate: float = Field(ge=0, lt=1)
    maintenance_amount: float = Field(0.0, ge=0)
    max_leverage: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _cap_above_floor(self) -> Tier:
        if self.notional_cap is not None and self.notional_cap <= self.notional_floor:
            raise ValueError("notional_cap must be above notional_floor")
        return self

    def maintenance_margin(self, notional: float) -> float:
        """Maintenance margin of a position of |notional| in this bracket."""
        return abs(notional) * self.maintenance_margin_rate - self.maintenance_amount


class TieredLiquidation(BaseModel):
    """A liquidation price with the bracket it was computed in."""

    model_config = ConfigDict(frozen=True)

    price: float
    tier: Tier
    iterations: int
    converged: bool


class PositionLiquidation(BaseModel):
    """Liquidation assessment of one position.

    ``liquidation_price`` is computed here (None when it cannot be, or when it is ≤ 0: a long whose margin
    covers a fall to zero); ``exchange_liquidation_price`` is what the exchange reported. ``distance_pct``
    is the nearer of the two distances and decides ``status``. ``reason_code``/``reason`` say why the
    computed price is missing (or why the status is unknown); ``notes`` carry non-blocking remarks.
    """

    model_config = ConfigDict(frozen=True)

    symbol: str
    side: Side
    margin_mode: Literal["isolated", "cross"] | None
    formula: Formula
    mark_price: float | None
    entry_price: float | None
    liquidation_price: float | None
    exchange_liquidation_price: float | None
    computed_distance_pct: float | None
    exchange_distance_pct: float | None
    distance_pct: float | None
    lp_divergence_pct: float | None
    status: Status
    tier: Tier | None
    tier_converged: bool | None
    wallet_balance_used: float | None
    reason_code: str | None
    reason: str | None
    notes: list[str]


class LiquidationReport(BaseModel):
    """Per-position liquidation distances and the aggregate (minimum distance, counts, closest)."""

    model_config = ConfigDict(frozen=True)

    exchange: str
    as_of: datetime | None
    wallet_balance: float | None
    warning_pct: float
    critical_pct: float
    positions: list[PositionLiquidation]
    min_distance_pct: float | None
    counts: dict[str, int]
    closest: PositionLiquidation | None


# --- formulas -------------------------------------------------------------------------------------------


def _sign(side: Side) -> int:
    if side == "long":
        return 1
    if side == "short":
        return -1
    raise InputError(f"side must be 'long' or 'short', not {side!r}")


def _check_inputs(quantity: float, entry_price: float, mmr: float) -> None:
    if not quantity > 0:
        raise InputError(f"position size must be > 0, got {quantity}")
    if not entry_price > 0:
        raise InputError(f"entry price must be > 0, got {entry_price}")
    if not 0 <= mmr < 1:
        raise InputError(f"maintenance margin rate must be in [0, 1), got {mmr}")


def binance_usdm_liquidation_price(
    side: Side,
    quantity: float,
    entry_price: float,
    wallet_balance: float,
    mmr: float,
    maintenance_amount: float,
    *,
    other_maintenance_margin: float = 0.0,
    other_unrealized_pnl: float = 0.0,
) -> float:
    """Binance USDⓈ-M liquidation price (one-way mode) for one bracket (``mmr``, ``maintenance_amount``).

    Cross: ``wallet_balance`` is the cross wallet balance and ``other_*`` the maintenance margin and
    unrealized PnL of all other cross positions. Isolated: ``wallet_balance`` is the isolated wallet
    balance and ``other_*`` stay 0. ``quantity`` is |size| in base units. May return ≤ 0 (no liquidation
    for a long).
    """
    _check_inputs(quantity, entry_price, mmr)
    s = _sign(side)
    numerator = (
        wallet_balance
        - other_maintenance_margin
        + other_unrealized_pnl
        + maintenance_amount
        - s * quantity * entry_price
    )
    return numerator / (quantity * mmr - s * quantity)


def generic_liquidation_price(
    side: Side, entry: float, contracts: float, contract_size: float, collateral: float, mmr: float
) -> float:
    """Liquidation price of a linear contract whose only margin is ``collateral`` (PnL excluded).

    Solves collateral + side·Q·(P − entry) = Q·P·mmr with Q = contracts x contract_size.
    """
    if not contract_size > 0:
        raise InputError(f"contract size must be > 0, got {contract_size}")
    quantity = contracts * contract_size
    _check_inputs(quantity, entry, mmr)
    s = _sign(side)
    return (collateral - s * quantity * entry) / (quantity * mmr - s * quantity)


# --- brackets ---------------------------------------------------------------------------------------------


def sorted_tiers(tiers: Sequence[Tier]) -> list[Tier]:
    """Brackets in ascending floor order (raises on an empty list)."""
    if not tiers:
        raise InputError("no maintenance-margin brackets given")
    return sorted(tiers, key=lambda t: t.notional_floor)


def select_tier(tiers: Sequence[Tier], notional: float) -> Tier:
    """The bracket holding |notional|: the first whose cap is ≥ it (the last one beyond every cap)."""
    ordered = sorted_tiers(tiers)
    n = abs(notional)
    for tier in ordered:
        if tier.notional_cap is None or n <= tier.notional_cap:
            return tier
    return ordered[-1]


def maintenance_margin(tiers: Sequence[Tier], notional: float) -> float:
    """Tiered maintenance margin of a position of |notional| (notional x rate − maintenance amount)."""
    return select_tier(tiers, notional).maintenance_margin(notional)


def check_tiers(tiers: Sequence[Tier], *, rel_tol: float = 1e-9, abs_tol: float = 1e-6) -> list[str]:
    """Problems with a bracket table (empty list = consistent).

    Checks: first floor 0, floors strictly increasing, each cap equal to the next floor, rates
    non-decreasing, and Binance's recurrence cum_i = cum_(i−1) + floor_i x (rate_i − rate_(i−1)).
    """
    if not tiers:
        return ["no brackets"]
    ordered = sorted_tiers(tiers)
    problems: list[str] = []
    if ordered[0].notional_floor != 0:
        problems.append(f"first floor is {ordered[0].notional_floor}, not 0")
    if ordered[0].maintenance_amount != 0:
        problems.append(f"first maintenance amount is {ordered[0].maintenance_amount}, not 0")
    for prev, cur in pairwise(ordered):
        label = f"bracket {cur.tier if cur.tier is not None else cur.notional_floor}"
        if cur.notional_floor <= prev.notional_floor:
            problems.append(f"{label}: floor not above the previous floor")
        if prev.notional_cap != cur.notional_floor:
            problems.append(f"{label}: floor {cur.notional_floor} != previous cap {prev.notional_cap}")
        if cur.maintenance_margin_rate < prev.maintenance_margin_rate:
            problems.append(f"{label}: maintenance margin rate decreases")
        expected = prev.maintenance_amount + cur.notional_floor * (
            cur.maintenance_margin_rate - prev.maintenance_margin_rate
        )
        if not math.isclose(cur.maintenance_amount, expected, rel_tol=rel_tol, abs_tol=abs_tol):
            problems.append(f"{label}: maintenance amount {cur.maintenance_amount} != {expected}")
    return problems


def derive_maintenance_amounts(tiers: Sequence[Tier]) -> list[Tier]:
    """The brackets with ``maintenance_amount`` recomputed by Binance's recurrence from rates and floors."""
    out: list[Tier] = []
    for tier in sorted_tiers(tiers):
        if not out:
            cum = 0.0
        else:
            prev = out[-1]
            cum = prev.maintenance_amount + tier.notional_floor * (
                tier.maintenance_margin_rate - prev.maintenance_margin_rate
            )
        out.append(tier.model_copy(update={"maintenance_amount": max(cum, 0.0)}))
    return out


def solve_tiered(
    tiers: Sequence[Tier],
    quantity: float,
    start_notional: float,
    price_for_tier: Callable[[Tier], float],
    *,
    side: Side = "long",
    max_iterations: int | None = None,
) -> TieredLiquidation:
    """Liquidation price with the bracket re-chosen at the liquidation notional until stable.

    Starts in the bracket of ``start_notional``; after each computation picks the bracket of
    ``quantity x max(price, 0)`` and recomputes when it differs. Bounded by ``max_iterations`` (default:
    number of brackets + 1); on a cycle every bracket is tried for self-consistency. When none is
    self-consistent (a table without ``cum`` makes the margin discontinuous) the most conservative price
    (nearest: highest for a long, lowest for a short) is returned with ``converged=False``.
    """
    ordered = sorted_tiers(tiers)
    limit = max_iterations if max_iterations is not None else len(ordered) + 1
    tier = select_tier(ordered, start_notional)
    seen: list[Tier] = []
    iterations = 0
    while iterations < limit:
        iterations += 1
        price = price_for_tier(tier)
        landed = select_tier(ordered, quantity * max(price, 0.0))
        if landed == tier:
            return TieredLiquidation(price=price, tier=tier, iterations=iterations, converged=True)
        seen.append(tier)
        if landed in seen:
            break
        tier = landed
    candidates: list[tuple[float, Tier]] = []
    for candidate in ordered:
        price = price_for_tier(candidate)
        iterations += 1
        if select_tier(ordered, quantity * max(price, 0.0)) == candidate:
            return TieredLiquidation(price=price, tier=candidate, iterations=iterations, converged=True)
        candidates.append((price, candidate))
    pick = max if side == "long" else min
    price, tier = pick(candidates, key=lambda c: c[0])
    return TieredLiquidation(price=price, tier=tier, iterations=iterations, converged=False)


def binance_usdm_tiered_liquidation(
    side: Side,
    quantity: float,
    entry_price: float,
    wallet_balance: float,
    tiers: Sequence[Tier],
    *,
    other_maintenance_margin: float = 0.0,
    other_unrealized_pnl: float = 0.0,
    start_notional: float | None = None,
) -> TieredLiquidation:
    """:func:`binance_usdm_liquidation_price` with bracket selection and recomputation.

    ``start_notional`` (default: quantity x entry price) picks the first bracket; pass the notional at
    the mark price for Binance's "position notional".
    """
    start = quantity * entry_price if start_notional is None else start_notional
    return solve_tiered(
        tiers,
        quantity,
        start,
        lambda t: binance_usdm_liquidation_price(
            side,
            quantity,
            entry_price,
            wallet_balance,
            t.maintenance_margin_rate,
            t.maintenance_amount,
            other_maintenance_margin=other_maintenance_margin,
            other_unrealized_pnl=other_unrealized_pnl,
        ),
        side=side,
    )


def generic_tiered_liquidation(
    side: Side,
    entry: float,
    contracts: float,
    contract_size: float,
    collateral: float,
    tiers: Sequence[Tier],
    *,
    start_notional: float | None = None,
) -> TieredLiquidation:
    """:func:`generic_liquidation_price` with the rate of the bracket at the liquidation notional."""
    quantity = contracts * contract_size
    start = quantity * entry if start_notional is None else start_notional
    return solve_tiered(
        tiers,
        quantity,
        start,
        lambda t: generic_liquidation_price(
            side, entry, contracts, contract_size, collateral, t.maintenance_margin_rate
        ),
        side=side,
    )


# --- distance and status ----------------------------------------------------------------------------------


def distance_pct(side: Side, mark: float, liquidation: float) -> float:
    """How far (percent of ``mark``) the mark must move against the position to reach ``liquidation``.

    0 when already at or beyond it. A long with a liquidation price ≤ 0 cannot be liquidated: 100.
    A short with one ≤ 0 is already under water: 0. Not capped above 100 for shorts.
    """
    if not mark > 0:
        raise InputError(f"mark price must be > 0, got {mark}")
    s = _sign(side)
    if liquidation <= 0:
        return 100.0 if s == 1 else 0.0
    move = (mark - liquidation) if s == 1 else (liquidation - mark)
    return max(0.0, move / mark * 100.0)


def status(distance: float | None, warning: float = WARNING_PCT, critical: float = CRITICAL_PCT) -> Status:
    """``critical`` below ``critical`` %, ``warning`` below ``warning`` %, else ``safe``; None is unknown."""
    if not 0 <= critical <= warning:
        raise InputError(f"thresholds must satisfy 0 <= critical ({critical}) <= warning ({warning})")
    if distance is None or math.isnan(distance):
        return "unknown"
    if distance < critical:
        return "critical"
    if distance < warning:
        return "warning"
    return "safe"


# --- positions ----------------------------------------------------------------------------------------------


class _Missing(Exception):
    """A computation input is missing (internal: becomes reason_code/reason)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Computed(BaseModel):
    price: float
    tier: Tier
    converged: bool
    formula: Formula
    wallet_balance_used: float
    notes: list[str]

    @classmethod
    def of(cls, solved: TieredLiquidation, formula: Formula, wallet: float, notes: list[str]) -> _Computed:
        return cls(
            price=solved.price,
            tier=solved.tier,
            converged=solved.converged,
            formula=formula,
            wallet_balance_used=wallet,
            notes=notes,
        )


def _quantity(p: Position) -> float:
    return p.contracts * p.contractSize


def _is_inverse(symbol: str) -> bool:
    """True for ccxt inverse symbols (settle currency != quote: ``BTC/USD:BTC``)."""
    if ":" not in symbol or "/" not in symbol:
        return False
    quote = symbol.split("/", 1)[1].split(":", 1)[0]
    settle = symbol.split(":", 1)[1].split("-", 1)[0]
    return settle != quote


def tiers_for(symbol: str, tiers_by_symbol: Mapping[str, Sequence[Tier]]) -> Sequence[Tier] | None:
    """Brackets of ``symbol``: the unified key (``BTC/USDT:USDT``), else ``BTC/USDT``, else ``BTCUSDT``."""
    if symbol in tiers_by_symbol:
        return tiers_by_symbol[symbol]
    base, sep, rest = symbol.partition("/")
    if not sep:
        return None
    quote = rest.split(":", 1)[0]
    for key in (f"{base}/{quote}:{quote}", f"{base}/{quote}", f"{base}{quote}"):
        if key in tiers_by_symbol:
            return tiers_by_symbol[key]
    return None


def _unrealized_pnl(p: Position) -> float | None:
    """Reported unrealized PnL, else side x size x (mark − entry)."""
    if p.unrealizedPnl is not None:
        return p.unrealizedPnl
    if p.markPrice is not None and p.entryPrice is not None:
        return _sign(p.side) * _quantity(p) * (p.markPrice - p.entryPrice)
    return None


def _own_margin(p: Position) -> tuple[float, list[str]]:
    """Margin of an isolated position without its unrealized PnL (Binance's isolated wallet balance).

    ccxt's ``collateral`` includes unrealized PnL (Binance: isolatedMargin = isolatedWallet + PnL), so the
    wallet is collateral − PnL. Fallbacks: entry notional / leverage, then ``initialMargin``.
    """
    if p.collateral is not None:
        upnl = _unrealized_pnl(p)
        if upnl is None:
            return p.collateral, ["unrealized PnL unknown: collateral used as the position's margin"]
        return p.collateral - upnl, []
    if p.leverage is not None and p.entryPrice is not None:
        margin = _quantity(p) * p.entryPrice / p.leverage
        return margin, ["no collateral reported: margin estimated as entry notional / leverage"]
    if p.initialMargin is not None:
        return p.initialMargin, ["no collateral reported: initialMargin used as the position's margin"]
    raise _Missing("no_margin", "no collateral, leverage or initial margin reported for the position")


def _tiers_or_missing(p: Position, tiers_by_symbol: Mapping[str, Sequence[Tier]]) -> Sequence[Tier]:
    tiers = tiers_for(p.symbol, tiers_by_symbol)
    if not tiers:
        raise _Missing("no_tiers", f"no maintenance-margin brackets for {p.symbol}")
    return tiers


def _start_notional(p: Position) -> float:
    notional = p.abs_notional
    if notional is None and p.entryPrice is not None:
        notional = _quantity(p) * p.entryPrice
    return notional or 0.0


def _cross_others(
    index: int, positions: Sequence[Position], tiers_by_symbol: Mapping[str, Sequence[Tier]]
) -> tuple[float, float]:
    """(TMM₁, UPNL₁): maintenance margin and unrealized PnL of the other cross positions."""
    tmm = 0.0
    upnl = 0.0
    for j, other in enumerate(positions):
        if j == index or other.contracts == 0 or other.marginMode == "isolated":
            continue
        if other.marginMode is None:
            raise _Missing(
                "cross_dependency",
                f"margin mode of {other.symbol} ({other.side}) not reported: cannot tell if it shares "
                "the cross wallet",
            )
        notional = other.abs_notional
        if notional is None:
            raise _Missing(
                "cross_dependency", f"{other.symbol} ({other.side}): no mark price or notional for its margin"
            )
        tiers = tiers_for(other.symbol, tiers_by_symbol)
        if not tiers:
            raise _Missing("cross_dependency", f"{other.symbol}: no maintenance-margin brackets")
        pnl = _unrealized_pnl(other)
        if pnl is None:
            raise _Missing("cross_dependency", f"{other.symbol} ({other.side}): unrealized PnL unknown")
        tmm += maintenance_margin(tiers, notional)
        upnl += pnl
    return tmm, upnl


def _compute(
    index: int,
    positions: Sequence[Position],
    wallet_balance: float | None,
    tiers_by_symbol: Mapping[str, Sequence[Tier]],
    binance: bool,
    hedged: set[str],
) -> _Computed:
    p = positions[index]
    if p.contracts == 0:
        raise _Missing("empty_position", "position size is 0")
    if p.entryPrice is None:
        raise _Missing("no_entry_price", "no entry price reported")
    if _is_inverse(p.symbol):
        raise _Missing("inverse_contract", f"{p.symbol} is an inverse contract: not supported")
    q = _quantity(p)
    if binance:
        if p.marginMode is None:
            raise _Missing("no_margin_mode", "margin mode (isolated/cross) not reported")
        if p.marginMode == "isolated":
            tiers = _tiers_or_missing(p, tiers_by_symbol)
            wallet, notes = _own_margin(p)
            solved = binance_usdm_tiered_liquidation(
                p.side, q, p.entryPrice, wallet, tiers, start_notional=_start_notional(p)
            )
            return _Computed.of(solved, "binance_usdm_isolated", wallet, notes)
        if p.symbol in hedged:
            raise _Missing(
                "hedge_mode", "long and short cross positions on one symbol (hedge mode): not supported"
            )
        if wallet_balance is None:
            raise _Missing("no_wallet_balance", "cross margin needs the cross wallet balance")
        tiers = _tiers_or_missing(p, tiers_by_symbol)
        tmm, upnl = _cross_others(index, positions, tiers_by_symbol)
        solved = binance_usdm_tiered_liquidation(
            p.side,
            q,
            p.entryPrice,
            wallet_balance,
            tiers,
            other_maintenance_margin=tmm,
            other_unrealized_pnl=upnl,
            start_notional=_start_notional(p),
        )
        return _Computed.of(solved, "binance_usdm_cross", wallet_balance, [])
    tiers = _tiers_or_missing(p, tiers_by_symbol)
    margin, notes = _own_margin(p)
    if p.marginMode != "isolated":
        notes.append(
            "generic formula counts only this position's collateral; a shared cross balance may keep "
            "it open longer"
        )
    solved = generic_tiered_liquidation(
        p.side, p.entryPrice, p.contracts, p.contractSize, margin, tiers, start_notional=_start_notional(p)
    )
    return _Computed.of(solved, "generic", margin, notes)


def _assess_one(
    index: int,
    positions: Sequence[Position],
    wallet_balance: float | None,
    tiers_by_symbol: Mapping[str, Sequence[Tier]],
    binance: bool,
    hedged: set[str],
    warning_pct: float,
    critical_pct: float,
) -> PositionLiquidation:
    p = positions[index]
    computed: _Computed | None = None
    code: str | None = None
    reason: str | None = None
    try:
        computed = _compute(index, positions, wallet_balance, tiers_by_symbol, binance, hedged)
    except _Missing as missing:
        code, reason = missing.code, missing.reason
    notes = list(computed.notes) if computed else []
    exchange_lp = p.liquidationPrice if p.liquidationPrice else None  # ccxt: 0 / None = not reported
    mark = p.markPrice
    computed_lp = computed.price if computed else None
    if computed is not None and not computed.converged:
        notes.append("no self-consistent bracket: the most conservative bracket's price is used")
    if computed_lp is not None and computed_lp <= 0:
        notes.append(f"computed liquidation price {computed_lp:.8g} ≤ 0")
    computed_distance = (
        distance_pct(p.side, mark, computed_lp) if mark is not None and computed_lp is not None else None
    )
    exchange_distance = distance_pct(p.side, mark, exchange_lp) if mark is not None and exchange_lp else None
    distances = [d for d in (computed_distance, exchange_distance) if d is not None]
    distance = min(distances) if distances else None
    if mark is None and code is None:
        code, reason = "no_mark_price", "no mark price: distance cannot be measured"
    elif mark is None:
        notes.append("no mark price: distance cannot be measured")
    divergence = (
        abs(computed_lp - exchange_lp) / mark * 100.0
        if mark is not None and computed_lp is not None and computed_lp > 0 and exchange_lp
        else None
    )
    formula: Formula = computed.formula if computed else ("exchange_reported" if exchange_lp else "none")
    return PositionLiquidation(
        symbol=p.symbol,
        side=p.side,
        margin_mode=p.marginMode,
        formula=formula,
        mark_price=mark,
        entry_price=p.entryPrice,
        liquidation_price=computed_lp if computed_lp is not None and computed_lp > 0 else None,
        exchange_liquidation_price=exchange_lp,
        computed_distance_pct=computed_distance,
        exchange_distance_pct=exchange_distance,
        distance_pct=distance,
        lp_divergence_pct=divergence,
        status=status(distance, warning_pct, critical_pct),
        tier=computed.tier if computed else None,
        tier_converged=computed.converged if computed else None,
        wallet_balance_used=computed.wallet_balance_used if computed else None,
        reason_code=code,
        reason=reason,
        notes=notes,
    )


def assess_positions(
    positions: Sequence[Position],
    wallet_balance: float | None,
    tiers_by_symbol: Mapping[str, Sequence[Tier]],
    exchange: str,
    now: datetime | None = None,
    *,
    warning_pct: float = WARNING_PCT,
    critical_pct: float = CRITICAL_PCT,
) -> LiquidationReport:
    """Liquidation distance of every position of one account on ``exchange`` (a ccxt id).

    ``wallet_balance`` is the cross wallet balance in the settle currency (Binance ``crossWalletBalance``;
    isolated positions use their own collateral). ``tiers_by_symbol`` maps ccxt unified symbols (or
    ``BTCUSDT``-style ids) to brackets. Binance ids use the USDⓈ-M formula; other exchanges the generic
    one. Every position is listed; those that cannot be measured are ``unknown`` with a reason.
    """
    status(None, warning_pct, critical_pct)  # validates the thresholds
    binance = exchange.lower() in BINANCE_USDM_IDS
    cross_sides: dict[str, set[str]] = {}
    for p in positions:
        if p.marginMode == "cross" and p.contracts > 0:
            cross_sides.setdefault(p.symbol, set()).add(p.side)
    hedged = {symbol for symbol, sides in cross_sides.items() if len(sides) > 1}
    results = [
        _assess_one(i, positions, wallet_balance, tiers_by_symbol, binance, hedged, warning_pct, critical_pct)
        for i in range(len(positions))
    ]
    measured = [r for r in results if r.distance_pct is not None]
    closest = min(measured, key=lambda r: r.distance_pct or 0.0) if measured else None
    counts = {s: sum(1 for r in results if r.status == s) for s in STATUSES}
    return LiquidationReport(
        exchange=exchange,
        as_of=now,
        wallet_balance=wallet_balance,
        warning_pct=warning_pct,
        critical_pct=critical_pct,
        positions=results,
        min_distance_pct=closest.distance_pct if closest else None,
        counts=counts,
        closest=closest,
    )
