"""Exposure per account and fleet-wide, from the latest state of each venue (account, exchange).

Pure: the caller passes the states, a `base_asset(symbol, exchange) -> str` resolver (e.g.
`tradeguard.adapters.markets.BaseAssetResolver`, whose exchange argument makes exchange-native ids resolve
against that exchange's markets; a plain function may ignore it) and `now`. Amounts are USD; `_pct` is 0–100.

Definitions
- A position's notional is its ccxt `notional` (settle currency), else contracts × contractSize × markPrice
  (`Position.abs_notional`), converted to USD as below; signed + for long, − for short. Positions with zero
  contracts and no notional are ignored.
- gross notional = Σ |notional|; net notional = Σ signed notional; leverage = gross notional / total equity
  (None when total equity is 0 or unknown).
- Net exposure per base asset = Σ signed notional of the positions whose symbol resolves to that asset, so
  `BTC/USDT:USDT`, `BTC-USD` and `XBTUSD` net into `BTC` and shorts net against longs across venues;
  `net_pct_of_equity` = net / total equity × 100.
- concentration_pct = max over assets of |net exposure| / gross notional × 100: the share of all gross
  exposure that is one asset's unhedged direction (100 = everything is one asset, one side; a perfectly
  hedged book is 0). None without positions.
- Unrealized PnL = Σ `unrealizedPnl` (settle currency) converted like notionals; a missing value counts 0.

Currencies. A position's amounts are in its settle currency (spot: its quote); the default
`settle_currency` reads it from the unified symbol (`BASE/QUOTE:SETTLE`, else `QUOTE`), unknown for a
native id — then assumed USD-pegged. Currencies in `config.usd_pegged` (USD, USDT, USDC, ...) count 1:1 as
USD (a de-peg is not modelled). Any other currency S is converted with `prices_usd[S]` when given; else, for
an inverse (coin-margined) contract whose settle currency is its base (`BTC/USD:BTC`): the reported notional
(in BTC) × markPrice, or, with no reported notional, contracts × contractSize (ccxt sizes inverse contracts
in the quote currency, assumed USD). Anything else cannot be priced: the position is left out of the sums,
listed in `unpriced_symbols`, and its summary is not `complete`. Equity in a non-pegged currency uses
`prices_usd`, else the markPrice of one of the venue's positions on that asset, else it is unknown.

Staleness. A venue whose `last_seen` is more than its exchange's limit (`stale_after_s_by_exchange`, else
`stale_after_s`) before `now` is stale. Stale venues are left out of every total, unless `conservative`,
which keeps counting their last known state. Either way they are listed in `stale` and keep their row in
the per-exchange breakdown, whose figures are always the last known ones (`included` says if counted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tradeguard.core.events import EquityPayload, Event, Position, PositionsPayload

BaseAssetFn = Callable[[str, str], str]  # (symbol, exchange id) -> unified base asset
SettleFn = Callable[[str, str], str | None]  # (symbol, exchange id) -> settle currency, None if unknown
USD_PEGGED = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a timezone (UTC)")
    return value.astimezone(UTC)


class ExposureConfig(_Frozen):
    """Staleness limits and currency assumptions."""

    stale_after_s: float = Field(120.0, gt=0, description="default staleness limit of a venue, seconds")
    stale_after_s_by_exchange: dict[str, float] = Field(default_factory=dict, description="per exchange id")
    conservative: bool = Field(False, description="keep counting the last known exposure of stale venues")
    usd_pegged: frozenset[str] = Field(USD_PEGGED, description="currencies counted 1:1 as USD")

    @field_validator("usd_pegged")
    @classmethod
    def _upper(cls, codes: frozenset[str]) -> frozenset[str]:
        return frozenset(c.upper() for c in codes)

    def stale_limit_s(self, exchange: str) -> float:
        return self.stale_after_s_by_exchange.get(exchange, self.stale_after_s)


class VenueState(_Frozen):
    """Latest known state of one (account, exchange): equity, positions, and when it was last heard from."""

    account: str
    exchange: str
    last_seen: datetime
    total_equity: float | None = Field(None, ge=0)
    equity_currency: str = "USD"
    equity_as_of: datetime | None = None
    positions: tuple[Position, ...] = ()
    positions_as_of: datetime | None = None

    _utc_times = field_validator("last_seen", "equity_as_of", "positions_as_of")(_utc)


def venue_states(events: Iterable[Event]) -> list[VenueState]:
    """Latest equity and positions event (by `ts`) per venue; `last_seen` = newest `ts` of any event."""
    seen: dict[tuple[str, str], datetime] = {}
    equity: dict[tuple[str, str], tuple[datetime, EquityPayload]] = {}
    positions: dict[tuple[str, str], tuple[datetime, PositionsPayload]] = {}
    for ev in events:
        key = (ev.account, ev.exchange)
        seen[key] = max(seen.get(key, ev.ts), ev.ts)
        pl = ev.payload
        if isinstance(pl, EquityPayload) and (key not in equity or ev.ts >= equity[key][0]):
            equity[key] = (ev.ts, pl)
        elif isinstance(pl, PositionsPayload) and (key not in positions or ev.ts >= positions[key][0]):
            positions[key] = (ev.ts, pl)
    out = []
    for (account, exchange), last_seen in seen.items():
        eq, pos = equity.get((account, exchange)), positions.get((account, exchange))
        out.append(
            VenueState(
                account=account,
                exchange=exchange,
                last_seen=last_seen,
                total_equity=eq[1].total_equity if eq else None,
                equity_currency=eq[1].currency if eq else "USD",
                equity_as_of=eq[0] if eq else None,
                positions=tuple(pos[1].positions) if pos else (),
                positions_as_of=pos[0] if pos else None,
            )
        )
    return out


class VenueRef(_Frozen):
    account: str
    exchange: str


class ExchangeExposure(_Frozen):
    """One exchange's row in a breakdown (last known figures). `account` is None in the fleet's rows,
    which sum every account on that exchange (`stale`: any of them; `included`: all of them; `age_s`: max)."""

    account: str | None
    exchange: str
    equity: float | None
    gross_notional: float
    net_notional: float
    leverage: float | None
    unrealized_pnl: float
    positions: int
    stale: bool
    age_s: float
    included: bool
    unpriced_symbols: tuple[str, ...]


class AssetExposure(_Frozen):
    """Net exposure to one base asset (signed USD notional) and its parts."""

    asset: str
    net_notional: float
    long_notional: float
    short_notional: float
    gross_notional: float
    net_pct_of_equity: float | None
    symbols: tuple[str, ...]


class ExposureSummary(_Frozen):
    """Totals of one account (`account` set) or of the fleet (`account` None), over included venues."""

    account: str | None
    total_equity: float
    gross_notional: float
    net_notional: float
    leverage: float | None
    unrealized_pnl: float
    concentration_pct: float | None
    concentrated_asset: str | None
    assets: dict[str, AssetExposure]
    exchanges: dict[str, ExchangeExposure]
    stale: tuple[VenueRef, ...]
    complete: bool = Field(description="every included venue has a known equity and only priced positions")


class ExposureReport(_Frozen):
    as_of: datetime
    conservative: bool
    fleet: ExposureSummary
    accounts: dict[str, ExposureSummary]


@dataclass(slots=True)
class _Leg:
    asset: str
    symbol: str
    notional: float  # signed USD
    upnl: float


@dataclass(slots=True)
class _Venue:
    state: VenueState
    equity: float | None
    age_s: float
    stale: bool
    included: bool
    legs: list[_Leg] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)


def settle_from_symbol(symbol: str, exchange: str | None = None) -> str | None:
    """Settle currency of a unified symbol (`BASE/QUOTE:SETTLE`, spot: `QUOTE`); None for a native id."""
    if "/" not in symbol:
        return None
    quote, _, settle = symbol.partition("/")[2].partition(":")
    return (settle or quote).split("-")[0].upper() or None


def aggregate_exposure(
    states: Iterable[VenueState],
    base_asset: BaseAssetFn,
    now: datetime,
    config: ExposureConfig | None = None,
    *,
    settle_currency: SettleFn | None = None,
    prices_usd: Mapping[str, float] | None = None,
) -> ExposureReport:
    """Exposure report per account and for the fleet at `now` (see the module doc for every definition)."""
    cfg = config or ExposureConfig()
    settle_of = settle_currency or settle_from_symbol
    prices = {k.upper(): v for k, v in (prices_usd or {}).items()}
    now = _utc(now) or now
    venues: dict[tuple[str, str], _Venue] = {}
    for st in states:
        key = (st.account, st.exchange)
        if key in venues:
            raise ValueError(f"duplicate state for account {st.account!r} on exchange {st.exchange!r}")
        venues[key] = _venue(st, base_asset, settle_of, prices, now, cfg)
    by_account: dict[str, list[_Venue]] = defaultdict(list)
    for v in venues.values():
        by_account[v.state.account].append(v)
    return ExposureReport(
        as_of=now,
        conservative=cfg.conservative,
        fleet=_summary(None, list(venues.values())),
        accounts={a: _summary(a, vs) for a, vs in sorted(by_account.items())},
    )


def _venue(
    st: VenueState,
    base_asset: BaseAssetFn,
    settle_of: SettleFn,
    prices: Mapping[str, float],
    now: datetime,
    cfg: ExposureConfig,
) -> _Venue:
    age = max((now - st.last_seen).total_seconds(), 0.0)
    stale = age > cfg.stale_limit_s(st.exchange)
    v = _Venue(st, None, age, stale, included=cfg.conservative or not stale)
    marks: dict[str, float] = {}
    for p in st.positions:
        if p.contracts == 0 and not p.notional:
            continue
        asset = base_asset(p.symbol, st.exchange)
        if p.markPrice is not None:
            marks.setdefault(asset, p.markPrice)
        settle = (settle_of(p.symbol, st.exchange) or "").upper() or None
        notional = _usd_notional(p, asset, settle, prices, cfg.usd_pegged)
        upnl = _to_usd(p.unrealizedPnl or 0.0, settle, asset, p.markPrice, prices, cfg.usd_pegged)
        if notional is None or upnl is None:
            v.unpriced.append(p.symbol)
            continue
        v.legs.append(_Leg(asset, p.symbol, notional if p.side == "long" else -notional, upnl))
    if st.total_equity is not None:
        cur = st.equity_currency.upper()
        v.equity = _to_usd(st.total_equity, cur, cur, marks.get(cur), prices, cfg.usd_pegged)
    return v


def _to_usd(
    amount: float,
    currency: str | None,
    asset: str,
    mark: float | None,
    prices: Mapping[str, float],
    pegged: frozenset[str],
) -> float | None:
    if amount == 0 or currency is None or currency in pegged:
        return amount
    if currency in prices:
        return amount * prices[currency]
    if currency == asset and mark is not None:
        return amount * mark
    return None


def _usd_notional(
    p: Position, asset: str, settle: str | None, prices: Mapping[str, float], pegged: frozenset[str]
) -> float | None:
    inverse = settle is not None and settle == asset and settle not in pegged
    if inverse and p.notional is None:
        return p.contracts * p.contractSize  # inverse contracts are sized in the quote currency (USD)
    n = p.abs_notional
    return None if n is None else _to_usd(n, settle, asset, p.markPrice, prices, pegged)


def _row(account: str | None, exchange: str, vs: list[_Venue]) -> ExchangeExposure:
    equities = [v.equity for v in vs if v.equity is not None]
    equity = sum(equities) if equities else None
    gross = sum(abs(leg.notional) for v in vs for leg in v.legs)
    return ExchangeExposure(
        account=account,
        exchange=exchange,
        equity=equity,
        gross_notional=gross,
        net_notional=sum(leg.notional for v in vs for leg in v.legs),
        leverage=gross / equity if equity else None,
        unrealized_pnl=sum(leg.upnl for v in vs for leg in v.legs),
        positions=sum(len(v.legs) + len(v.unpriced) for v in vs),
        stale=any(v.stale for v in vs),
        age_s=max(v.age_s for v in vs),
        included=all(v.included for v in vs),
        unpriced_symbols=tuple(sorted({s for v in vs for s in v.unpriced})),
    )


def _summary(account: str | None, venues: list[_Venue]) -> ExposureSummary:
    venues = sorted(venues, key=lambda v: (v.state.account, v.state.exchange))
    counted = [v for v in venues if v.included]
    legs = [leg for v in counted for leg in v.legs]
    equity = sum(v.equity for v in counted if v.equity is not None)
    gross = sum(abs(leg.notional) for leg in legs)
    per_asset: dict[str, list[_Leg]] = defaultdict(list)
    for leg in legs:
        per_asset[leg.asset].append(leg)
    assets = [_asset(a, ls, equity) for a, ls in per_asset.items()]
    assets.sort(key=lambda x: (-abs(x.net_notional), x.asset))
    top = assets[0] if assets and gross > 0 else None
    by_exchange: dict[str, list[_Venue]] = defaultdict(list)
    for v in venues:
        by_exchange[v.state.exchange].append(v)
    return ExposureSummary(
        account=account,
        total_equity=equity,
        gross_notional=gross,
        net_notional=sum(leg.notional for leg in legs),
        leverage=gross / equity if equity > 0 else None,
        unrealized_pnl=sum(leg.upnl for leg in legs),
        concentration_pct=abs(top.net_notional) / gross * 100 if top else None,
        concentrated_asset=top.asset if top else None,
        assets={x.asset: x for x in assets},
        exchanges={ex: _row(account, ex, vs) for ex, vs in sorted(by_exchange.items())},
        stale=tuple(VenueRef(account=v.state.account, exchange=v.state.exchange) for v in venues if v.stale),
        complete=all(v.equity is not None and not v.unpriced for v in counted),
    )


def _asset(asset: str, legs: list[_Leg], equity: float) -> AssetExposure:
    long_ = sum(leg.notional for leg in legs if leg.notional > 0)
    short = -sum(leg.notional for leg in legs if leg.notional < 0)
    net = long_ - short
    return AssetExposure(
        asset=asset,
        net_notional=net,
        long_notional=long_,
        short_notional=short,
        gross_notional=long_ + short,
        net_pct_of_equity=net / equity * 100 if equity > 0 else None,
        symbols=tuple(sorted({leg.symbol for leg in legs})),
    )
