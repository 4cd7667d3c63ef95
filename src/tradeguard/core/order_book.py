"""Order-book gates of the pre-trade check: imbalance in the top levels, microprice versus the last trade.

**Imbalance against the order.** Microstructure studies measure order-book (queue) imbalance as
``(V_bid - V_ask) / (V_bid + V_ask)`` over the best levels and find that its sign predicts the next mid-price
move: more resting buy volume than sell volume and the price tends to tick up, and the other way round
(Cao, Hansch & Wang 2009; Gould & Bonart 2016, "Queue imbalance as a one-tick-ahead price predictor";
Cartea, Donnelly & Jaimungal 2018, "Enhancing trading strategies with order book signals"). Imbalance
*against* an order is that pressure pointing the other way from the order's trade: for a buy, sellers
outweighing buyers, ``imbalance_ratio = ask depth / bid depth`` summed over the top ``levels`` levels; for a
sell, ``bid depth / ask depth``. A buy into a book where sellers outweigh buyers 3:1 opens a position the book
expects to lose right away, and a patient buyer would get a lower price by waiting, so the order is reduced
(or delayed, per config). The same book has plenty of liquidity for the buy to fill against; fill cost is
what the microprice gate is about.

**Reduced size.** A reduced order keeps ``min(amount, own-side depth) / imbalance_ratio``: the book 3:1
against it keeps at most a third, 5:1 a fifth; and it is never more than the depth on the order's own side
(for a buy the bids, the buyers with it and the liquidity a new long would sell back into) divided by the
ratio. The cut is proportional to the pressure, so at the threshold itself the order already shrinks.

**Microprice.** The size-weighted mid of the top of book, ``(bid * ask_size + ask * bid_size) / (bid_size +
ask_size)`` (the first approximation of Stoikov's micro-price, 2018), leans toward the thinner side, the one
about to be taken out. Its deviation from the last trade is signed so that positive is adverse to the
order: for a buy, the microprice above the last trade (the quotes moved up since the tape last printed, the
buy would chase). Liquid pairs quote spreads of hundredths of a percent, so a deviation above
``max_microprice_deviation_pct`` means a book just swept or gapped: the order is delayed by one tick
(``retry_after_ms = tick_ms``) to let it refill. Without a last trade price the microprice gate does not
run (``microprice_deviation_pct`` is None).

When both gates fire, delay wins: nothing is sent now, and the retry is checked afresh. Thresholds are
inclusive for the imbalance (ratio ≥ limit) and exclusive for the microprice (deviation > limit).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tradeguard.errors import InputError

Side = Literal["buy", "sell"]
Level = tuple[float, float]  # (price, amount)
BookAction = Literal["allow", "reduce", "delay"]
BookCode = Literal["book_ok", "book_imbalance", "book_microprice_adverse"]


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """An order book as of ``timestamp`` (exchange time, or when it was received): levels best first."""

    symbol: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    timestamp: datetime
    last_trade_price: float | None = None

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise InputError(f"order book of {self.symbol}: timestamp must be timezone-aware")


@dataclass(frozen=True, slots=True)
class OrderBookConfig:
    """Limits of the order-book gates; ``max_age_s`` is for the book source (a book older is stale)."""

    levels: int = 10
    max_imbalance_ratio: float = 3.0
    imbalance_action: Literal["reduce", "delay"] = "reduce"
    max_microprice_deviation_pct: float = 0.3
    tick_ms: int = 1000
    max_age_s: float = 5.0

    def __post_init__(self) -> None:
        if self.levels < 1 or self.tick_ms < 1:
            raise InputError("order book levels and tick_ms must be at least 1")
        if not self.max_imbalance_ratio > 1:
            raise InputError(f"max_imbalance_ratio must be above 1, got {self.max_imbalance_ratio}")
        if not (self.max_microprice_deviation_pct > 0 and self.max_age_s > 0):
            raise InputError("max_microprice_deviation_pct and max_age_s must be positive")
        if self.imbalance_action not in ("reduce", "delay"):
            raise InputError(f"imbalance_action must be reduce or delay, got {self.imbalance_action!r}")


@dataclass(frozen=True, slots=True)
class BookVerdict:
    """What the order-book gates say about one order.

    ``allowed_fraction`` is the share of the amount that may be sent now (1 allow, 0 delay, in between
    reduce) and ``allowed_amount`` that share of it; ``retry_after_ms`` is set when delayed.
    """

    action: BookAction
    code: BookCode
    message: str
    imbalance_ratio: float
    microprice: float
    microprice_deviation_pct: float | None
    allowed_fraction: float
    allowed_amount: float
    retry_after_ms: int | None


def book_gate(book: BookSnapshot, side: Side, amount: float, cfg: OrderBookConfig) -> BookVerdict:
    """Judge an order of ``amount`` (base units) on ``side`` against ``book`` (see the module docstring).

    An empty side, a crossed or locked book, unsorted levels or non-positive values are an InputError.
    """
    if side not in ("buy", "sell"):
        raise InputError(f"side must be buy or sell, got {side!r}")
    if not (math.isfinite(amount) and amount > 0):
        raise InputError(f"order amount must be positive, got {amount}")
    bids, asks = book.bids[: cfg.levels], book.asks[: cfg.levels]
    _check_levels(book.symbol, bids, asks)
    bid_depth, ask_depth = sum(a for _, a in bids), sum(a for _, a in asks)
    own, other = (bid_depth, ask_depth) if side == "buy" else (ask_depth, bid_depth)
    ratio = other / own
    (bid, bid_size), (ask, ask_size) = bids[0], asks[0]
    microprice = (bid * ask_size + ask * bid_size) / (bid_size + ask_size)
    last = book.last_trade_price
    deviation = None
    if last is not None:
        if not (math.isfinite(last) and last > 0):
            raise InputError(f"order book of {book.symbol}: last trade price must be positive, got {last}")
        # microprice - last from offsets to the last trade: exact for prices near it, so mirrored books agree
        offset = ((bid - last) * ask_size + (ask - last) * bid_size) / (bid_size + ask_size)
        deviation = (1.0 if side == "buy" else -1.0) * offset * 100.0 / last
    imbalanced = ratio >= cfg.max_imbalance_ratio
    sellers, buyers = ("sellers", "buyers") if side == "buy" else ("buyers", "sellers")
    reasons: list[str] = []
    code: BookCode = "book_ok"
    if deviation is not None and deviation > cfg.max_microprice_deviation_pct:
        code = "book_microprice_adverse"
        reasons.append(
            f"the microprice {microprice:g} is {abs(deviation):.3f}% {'above' if side == 'buy' else 'below'} "
            f"the last trade {last:g} (limit {cfg.max_microprice_deviation_pct:g}%), so the price is moving "
            f"against the {side}"
        )
    if imbalanced:
        code = "book_imbalance" if code == "book_ok" else code
        reasons.append(
            f"{sellers} outweigh {buyers} {ratio:.2f}:1 in the top {len(bids)} levels of the book "
            f"(limit {cfg.max_imbalance_ratio:g}:1)"
        )
    if code == "book_microprice_adverse" or (imbalanced and cfg.imbalance_action == "delay"):
        message = _sentence(reasons, f"the {side} waits one tick ({cfg.tick_ms} ms)")
        return BookVerdict("delay", code, message, ratio, microprice, deviation, 0.0, 0.0, cfg.tick_ms)
    if imbalanced:
        allowed = min(amount, own) / ratio
        message = _sentence(
            reasons,
            f"the {side} is cut from {amount:g} to {allowed:g}, the smaller of the amount and the "
            f"{'bid' if side == 'buy' else 'ask'} depth ({own:g}) divided by {ratio:.2f}",
        )
        return BookVerdict(
            "reduce", code, message, ratio, microprice, deviation, allowed / amount, allowed, None
        )
    checked = (
        f"the microprice is {deviation:+.3f}% against it versus the last trade "
        f"(limit {cfg.max_microprice_deviation_pct:g}%)"
        if deviation is not None
        else "no last trade price, so the microprice is not checked"
    )
    message = (
        f"The book does not lean against the {side}: {sellers} to {buyers} {ratio:.2f}:1 in the top "
        f"{len(bids)} levels (limit {cfg.max_imbalance_ratio:g}:1); {checked}."
    )
    return BookVerdict("allow", code, message, ratio, microprice, deviation, 1.0, amount, None)


def book_age_s(book: BookSnapshot, now: datetime) -> float:
    """Seconds from the book's timestamp to ``now`` (an aware datetime)."""
    return (now - book.timestamp).total_seconds()


def _check_levels(symbol: str, bids: tuple[Level, ...], asks: tuple[Level, ...]) -> None:
    if not bids or not asks:
        raise InputError(f"order book of {symbol} has an empty side ({len(bids)} bids, {len(asks)} asks)")
    for name, levels in (("bid", bids), ("ask", asks)):
        if not all(math.isfinite(p) and math.isfinite(a) and p > 0 and a > 0 for p, a in levels):
            raise InputError(f"order book of {symbol}: {name} prices and amounts must be positive")
    if bids[0][0] >= asks[0][0]:
        raise InputError(
            f"order book of {symbol} is crossed: best bid {bids[0][0]:g} ≥ best ask {asks[0][0]:g}"
        )
    sorted_bids = all(a[0] > b[0] for a, b in itertools.pairwise(bids))
    sorted_asks = all(a[0] < b[0] for a, b in itertools.pairwise(asks))
    if not (sorted_bids and sorted_asks):
        raise InputError(f"order book of {symbol}: levels must be sorted best first, one per price")


def _sentence(reasons: list[str], outcome: str) -> str:
    text = "; ".join(reasons) + f": {outcome}."
    return text[0].upper() + text[1:]
