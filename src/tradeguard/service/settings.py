"""Service settings: a TOML file, overridden by TRADEGUARD_* environment variables (nested with `__`).

Example: TRADEGUARD_PORT=9000, TRADEGUARD_PAIRS='["BTC/USDT","SOL/USDT"]',
TRADEGUARD_AUTH__ANONYMOUS_READ=true.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tradeguard.adapters.alerts import EmailConfig, PagerDutyConfig, SlackConfig, TelegramConfig
from tradeguard.adapters.candle_files import parse_pair
from tradeguard.adapters.webhooks.targets import DEFAULT_BLOCKED, parse_networks
from tradeguard.core.alerting import FatiguePolicy, QuietHours, RoutingRule
from tradeguard.core.config import MarketGuardConfig
from tradeguard.core.timeframe import timeframe_seconds

_TOML_FILE: ContextVar[Path | None] = ContextVar("tradeguard_toml_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthSettings(_Section):
    """API keys: every route but /health needs one unless anonymous read of market data is on."""

    anonymous_read: bool = False
    rate_limit_per_s: float = Field(100.0, gt=0, description="sustained requests per second per key")
    rate_limit_burst: int = Field(200, ge=1, description="requests a key may make at once")
    key_cache_s: float = Field(30.0, ge=0, description="how long a verified key is trusted without the store")


class StaleSettings(_Section):
    """When an answer counts as stale, and what a stale answer says."""

    max_age_candles: float = Field(2.0, gt=0, description="last candle older than this many candles: stale")
    block: bool = Field(True, description="stale answers say safe_to_trade=false (a blind guard is not safe)")


class FeedSettings(_Section):
    """Where candles come from: the live exchange, a replayed data directory, or the simulator."""

    mode: Literal["live", "replay", "simulator"] = "live"
    data_dir: Path | None = Field(None, description="replay: the Freqtrade data directory")
    speed: float = Field(60.0, gt=0, description="replay/simulator: simulated seconds per real second")
    seed: int = 7
    api_url: str | None = Field(None, description="override the exchange REST base URL (tests, proxies)")
    ws_url: str | None = Field(None, description="override the exchange WebSocket base URL")
    use_websocket: bool = True
    poll_interval_s: float = Field(10.0, gt=0)
    history_candles: int = Field(1200, ge=100, description="candles seeded and kept per pair")


class ExternalSettings(_Section):
    """Live external context sources; each can be switched off or pointed elsewhere."""

    enabled: bool = True
    sources: list[str] = Field(
        default_factory=lambda: ["fear_greed", "btc_dominance", "vix", "dxy", "funding_rate"]
    )
    ttl_s: dict[str, float] = Field(
        default_factory=lambda: {
            "fear_greed": 3600.0,
            "btc_dominance": 600.0,
            "vix": 21600.0,
            "dxy": 21600.0,
            "funding_rate": 900.0,
        },
        description="how long a fetched series is reused before asking the source again",
    )
    keep_last_good_s: float = Field(7 * 86400.0, gt=0, description="serve the last good series this long")
    timeout_s: float = Field(10.0, gt=0)
    directory: Path | None = Field(
        None, description="replay: external files (as for `assess --external-dir`)"
    )
    fear_greed_url: str = "https://api.alternative.me"
    coingecko_url: str = "https://api.coingecko.com"
    fred_url: str = "https://fred.stlouisfed.org"
    funding_api_url: str | None = None


class BreakerSettings(_Section):
    """One breaker kind's threshold (default: the kind's own) and whether it only logs (shadow)."""

    threshold: float | None = None
    shadow: bool = False


class FreqtradeBot(_Section):
    """A Freqtrade bot to pause when a breaker of its account trips."""

    url: str
    username: str
    password: SecretStr
    mode: Literal["stopentry", "stop"] = "stopentry"


class ExchangeAccount(_Section):
    """Exchange keys whose open orders are cancelled when a breaker of the account trips."""

    exchange: str
    api_key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None
    market_types: list[Literal["spot", "swap", "future"]] = Field(default_factory=lambda: ["spot"])
    symbols: list[str] | None = None


class PullAccount(_Section):
    """Read-only exchange keys polled for balances and positions (pull mode)."""

    exchange: str
    api_key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None
    market_types: list[Literal["spot", "swap", "future"]] = Field(default_factory=lambda: ["swap"])
    interval_s: float = Field(15.0, gt=0)
    currency: str = "USDT"
    api_url: str | None = Field(None, description="override the exchange REST base URL (tests, proxies)")


class AccountActions(_Section):
    """What happens to an account's bots and orders when one of its breakers trips."""

    freqtrade: list[FreqtradeBot] = Field(default_factory=list)
    cancel_orders: list[ExchangeAccount] = Field(default_factory=list)


class PortfolioSettings(_Section):
    """Portfolio guard thresholds and per-account trip actions."""

    breakers: dict[
        Literal[
            "drawdown", "correlation", "liquidation_distance", "rapid_loss", "global_drawdown", "daily_loss"
        ],
        BreakerSettings,
    ] = Field(default_factory=dict)
    drawdown_window: Literal["1h", "4h", "24h", "7d", "30d"] = "24h"
    venue_stale_after_s: float = Field(120.0, gt=0, description="a venue not heard from this long is stale")
    conservative: bool = Field(False, description="keep counting a stale venue's last known exposure")
    actions: dict[str, AccountActions] = Field(default_factory=dict, description="per account")
    pull: dict[str, list[PullAccount]] = Field(default_factory=dict, description="per account: keys to poll")
    evaluate_every_s: float = Field(30.0, gt=0, description="re-evaluate every account this often")
    snapshot_every_s: float = Field(300.0, gt=0, description="audit exposure and correlation this often")


class BusSettings(_Section):
    """Event intake over NATS JetStream (off unless a URL is given)."""

    nats_url: str | None = None
    stream: str = "TRADEGUARD_EVENTS"
    durable: str = "tradeguard-intake"
    ack_wait_s: float = Field(
        30.0,
        gt=0,
        description="JetStream redelivers a message not acked this long after delivery: keep it above the "
        "worst store commit time (plus a fetch's wait), or slow commits cause redelivery storms; applied "
        "to an existing durable consumer at start",
    )


class AuditSettings(_Section):
    """Where the Ed25519 audit key lives (TRADEGUARD_AUDIT_KEY in the environment wins)."""

    key_file: Path = Path("var/audit_ed25519.pem")


class OrderVenue(_Section):
    """An exchange the order guard reads metadata, prices and books from (public endpoints, no keys)."""

    market_types: list[Literal["spot", "swap", "future"]] = Field(default_factory=lambda: ["spot"])
    api_url: str | None = Field(None, description="override the exchange REST base URL (tests, proxies)")
    ws_url: str | None = Field(None, description="override the exchange WebSocket base URL")
    use_websocket: bool = Field(True, description="watch order books of traded symbols (else fetch)")


class OrderAccount(_Section):
    """One account's order policy."""

    risk_level: Literal["conservative", "balanced", "aggressive"] = "balanced"
    market_guard_action: Literal["block", "reduce"] = "block"
    market_guard_fraction: float = Field(0.5, gt=0, lt=1, description="reduce: the share of the order kept")


class OrderSettings(_Section):
    """The pre-trade check (POST /v1/orders/check)."""

    rate_limit_per_s: float = Field(10.0, gt=0, description="orders per second per bot")
    rate_limit_burst: int = Field(10, ge=1)
    redis_url: SecretStr | None = Field(
        None, description="share each bot's rate limit across replicas in Redis (else in-process; secret)"
    )
    redis_timeout_ms: float = Field(
        50.0, gt=0, description="a Redis call slower than this is an error (check_error:redis)"
    )
    redis_key_prefix: str = Field("tradeguard:rate", min_length=1, description="<prefix>:<account>:<bot>")
    redis_down_for_ms: float = Field(
        1000.0, ge=0, description="after a Redis failure, fail at once this long instead of waiting again"
    )
    caps: tuple[float, float, float] = Field((1_000.0, 10_000.0, 100_000.0), description="notional per tier")
    promote_days: int = Field(14, ge=0)
    promote_sharpe: float = 1.0
    proven_days: int = Field(60, ge=0)
    var_limits_pct: dict[str, float] = Field(
        default_factory=lambda: {"conservative": 8.0, "balanced": 15.0, "aggressive": 25.0}
    )
    var_scenarios: int = Field(10_000, ge=1_000, le=100_000)
    var_lookback_days: int = Field(90, ge=30, le=365)
    var_exchange: str = Field("binance", description="daily returns for VaR come from this exchange")
    var_quote: str = "USDT"
    book_levels: int = Field(10, ge=1, le=100)
    book_max_imbalance_ratio: float = Field(3.0, gt=1)
    book_imbalance_action: Literal["reduce", "delay"] = "reduce"
    book_max_microprice_deviation_pct: float = Field(0.3, gt=0)
    book_tick_ms: int = Field(1000, ge=1)
    book_max_age_s: float = Field(5.0, gt=0, description="an order book older than this is stale")
    kill_switch_max_age_s: float = Field(5.0, gt=0, description="kill switch view older than this: error")
    venues: dict[str, OrderVenue] = Field(default_factory=dict, description="per exchange id (else public)")
    accounts: dict[str, OrderAccount] = Field(default_factory=dict)
    default_account: OrderAccount = Field(default_factory=OrderAccount)


class AlertsSettings(_Section):
    """Alerts for people: channels (secrets from the environment, e.g. TRADEGUARD_ALERTS__TELEGRAM__TOKEN),
    routing per account ("*": every account), fatigue limits and quiet hours (see core/alerting.py)."""

    telegram: TelegramConfig | None = None
    slack: SlackConfig | None = None
    pagerduty: PagerDutyConfig | None = None
    email: EmailConfig | None = None
    routes: dict[str, list[RoutingRule]] = Field(default_factory=dict, description="per account; first match")
    quiet_hours: dict[str, QuietHours] = Field(default_factory=dict, description="per account")
    fatigue: FatiguePolicy = Field(default_factory=FatiguePolicy)
    service_url: str = Field("", description="the service's URL as people reach it, for reset instructions")
    attempts: int = Field(4, ge=1, description="tries per message")
    timeout_s: float = Field(10.0, gt=0)
    max_age_s: float = Field(900.0, gt=0, description="older events (an outage): not sent")


class WebhookSettings(_Section):
    """Webhook delivery (Standard Webhooks): retries, timeouts, when a failing endpoint is disabled."""

    retry_schedule_s: list[float] = Field(
        default_factory=lambda: [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        min_length=1,
        description="delay before each attempt (the first: 0); after the last one fails: dead",
    )
    timeout_s: float = Field(10.0, gt=0, description="a receiver's answer must arrive within this")
    disable_after_days: float = Field(5.0, gt=0, description="disable an endpoint failing for this long")
    rotation_overlap_h: float = Field(24.0, ge=0, description="a rotated-out secret keeps signing this long")
    poll_interval_s: float = Field(1.0, gt=0, description="look for due deliveries at least this often")
    jitter_ratio: float = Field(0.1, ge=0, le=1, description="stretch each retry delay by up to this share")
    max_in_flight: int = Field(256, ge=1, description="deliveries being sent at once")
    subscription_ttl_s: float = Field(5.0, ge=0, description="see other replicas' webhook changes this fast")
    blocked_networks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED),
        description="CIDRs webhooks may not reach (SSRF); add private ranges for untrusted tenants",
    )

    @field_validator("blocked_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must be 0 or more seconds")
        return value


class Settings(BaseSettings):
    """Everything `tradeguard serve` reads at start-up; unknown keys are errors."""

    model_config = SettingsConfigDict(env_prefix="TRADEGUARD_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    exchange: str = "binance"
    pairs: list[str] = Field(default_factory=lambda: ["BTC/USDT", "ETH/USDT"])
    timeframe: str = "1h"
    refresh_interval_s: float = Field(60.0, gt=0, description="recompute at least this often")
    store_url: str = "sqlite:///var/tradeguard.db"
    environment: Literal["development", "production"] = "development"
    auth: AuthSettings = Field(default_factory=AuthSettings)
    stale: StaleSettings = Field(default_factory=StaleSettings)
    feed: FeedSettings = Field(default_factory=FeedSettings)
    external: ExternalSettings = Field(default_factory=ExternalSettings)
    market: MarketGuardConfig = Field(default_factory=MarketGuardConfig)
    portfolio: PortfolioSettings = Field(default_factory=PortfolioSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    orders: OrderSettings = Field(default_factory=OrderSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("track at least one pair")
        return [parse_pair(p) for p in value]

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        timeframe_seconds(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _TOML_FILE.get()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml),)
        return sources

    @classmethod
    def load(cls, toml_file: Path | None = None, **overrides: object) -> Settings:
        """Defaults < TOML file < environment < explicit overrides (e.g. command-line options)."""
        token = _TOML_FILE.set(toml_file)
        try:
            return cls(**overrides)
        finally:
            _TOML_FILE.reset(token)
