"""Python client of the tradeguard service: `TradeguardClient` (blocking, thread-safe) and
`AsyncTradeguardClient` (asyncio), with the same calls, typed answers and failure rules.

    with TradeguardClient("http://127.0.0.1:8000", on_unavailable="block") as guard:  # $TRADEGUARD_API_KEY
        guard.get_risk("BTC/USDT").safe_to_trade
        guard.check_order(order).decision            # OrderRequest or its dict → ClientOrderDecision
        guard.publish_events([event, ...])           # → the ids stored
        guard.get_portfolio().leverage, guard.get_trading_state().state

When the service cannot answer. A timeout, a connection error, a 5xx, an unreadable answer or an open circuit
breaker make the service *unavailable*: `check_order` then answers the client's own decision per
`on_unavailable` — which every client must name, there is no default — "allow" (the whole amount) or
"block" (amount 0), with one reason `guard_unavailable` (check "client"), no checks, a null VaR, no trading
state, and `source="client_fallback"` (`decision.synthesized`). Every other call raises `GuardUnavailable`.
An answer below 500 is the service speaking: it raises `TradeguardAPIError` with the problem details
(status, type, title, detail, extensions) — `check_order` too, the fallback is for silence only.

Retries (`RetryPolicy`: 3 attempts, full-jitter exponential backoff from 0.1 s capped at 1 s, no retry
ending later than 5 s after the call started; a `Retry-After` header replaces the jittered wait):
- `get_risk`, `get_portfolio`, `get_trading_state`: retried when unavailable (they only read).
- `publish_events`: retried too — the service stores each event id once, and a resent batch answers 202
  with its ids as duplicates, so a retry after a lost answer neither loses nor doubles anything.
- `check_order`: never retried when unavailable. The check is free of side effects on positions, but the
  service counts it toward the bot's order rate limit and size history and audits it, so a request that
  timed out after the service had decided would be counted twice; the fallback answers at once instead.
- 429 (the key's rate limit, refused before anything ran) is retried on every call after `Retry-After`
  when that fits in the deadline; any other 4xx is never retried.

Circuit breaker (`CircuitBreaker`, one per client unless shared): opens after 3 consecutive unavailable
answers, or at once after a timeout, so a dead or hung service costs one timeout, not one per call; open for
30 s, during which calls fail fast without the network (`check_order` falls back at once); then one trial
call (half-open) closes it again or reopens it for another 30 s. The timeout (default 2 s) bounds each
network operation.

In a Freqtrade strategy (one blocking client per bot process; Freqtrade treats an exception raised by
`confirm_trade_entry` as "confirm", so the hook decides itself on every error):

    from tradeguard.client import TradeguardClient, TradeguardClientError

    class GuardedStrategy(IStrategy):
        def bot_start(self, **kwargs) -> None:
            live = not self.config["dry_run"]
            self.guard_mode = "live" if live else "paper"
            self.guard = TradeguardClient(
                "http://tradeguard:8000",  # api key from $TRADEGUARD_API_KEY
                on_unavailable="block" if live else "allow",
            )

        def confirm_trade_entry(self, pair, order_type, amount, rate, time_in_force, current_time,
                                entry_tag, side, **kwargs) -> bool:
            limit = order_type == "limit"
            try:
                decision = self.guard.check_order({
                    "account": "alpha", "bot": self.config["bot_name"],
                    "exchange": self.config["exchange"]["name"], "symbol": pair,
                    "side": "buy" if side == "long" else "sell", "amount": amount,
                    "type": "limit" if limit else "market", "price": rate if limit else None,
                    "mode": self.guard_mode,
                })
            except (TradeguardClientError, ValueError):  # refused (4xx) or an invalid order
                logger.exception("tradeguard check failed for %s", pair)
                return self.guard_mode == "paper"
            if decision.synthesized:
                logger.warning("tradeguard unavailable: %s", decision.reasons[0].message)
            return decision.decision == "allow"  # reduce / delay / block: not this entry
"""

from tradeguard.client._core import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT_S,
    CircuitBreaker,
    OnUnavailable,
    RetryPolicy,
)
from tradeguard.client.aio import AsyncTradeguardClient
from tradeguard.client.errors import CircuitOpen, GuardUnavailable, TradeguardAPIError, TradeguardClientError
from tradeguard.client.models import ClientOrderDecision, Portfolio, RiskAssessment, TradingStateReport
from tradeguard.client.sync import TradeguardClient

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_S",
    "AsyncTradeguardClient",
    "CircuitBreaker",
    "CircuitOpen",
    "ClientOrderDecision",
    "GuardUnavailable",
    "OnUnavailable",
    "Portfolio",
    "RetryPolicy",
    "RiskAssessment",
    "TradeguardAPIError",
    "TradeguardClient",
    "TradeguardClientError",
    "TradingStateReport",
]
