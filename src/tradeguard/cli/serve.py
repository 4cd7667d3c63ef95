"""`tradeguard serve` (live, or replay with --data-dir) and `tradeguard demo` (built-in simulator)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from tradeguard.cli import args as types
from tradeguard.errors import InputError
from tradeguard.service.kernel import build_service, ensure_admin_key
from tradeguard.service.runtime import settle_gc
from tradeguard.service.settings import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the HTTP + WebSocket service",
        description="Serve the market guard over HTTP and WebSocket: live exchange data by default, or a "
        "replayed Freqtrade data directory with --data-dir. Settings: --config TOML, then TRADEGUARD_* "
        "environment variables, then these options.",
    )
    _common(serve)
    serve.add_argument("--pairs", type=types.pair_list, help="comma-separated ccxt pairs to track")
    serve.add_argument("--timeframe", type=types.timeframe, help="candle timeframe (default 1h)")
    serve.add_argument("--data-dir", type=Path, help="replay this Freqtrade data directory as if live")
    serve.add_argument("--external-dir", type=Path, help="replay: external files (fear & greed, VIX, ...)")
    serve.add_argument("--speed", type=float, help="replay: simulated seconds per real second (default 60)")
    serve.set_defaults(func=run_serve)

    demo = sub.add_parser(
        "demo",
        help="run the whole service on the built-in market simulator (synthetic data, no network)",
        description="Every answer is labelled synthetic. One simulated 1h candle per second by default.",
    )
    _common(demo)
    demo.add_argument("--speed", type=float, default=3600.0, help="simulated seconds per real second")
    demo.add_argument("--seed", type=int, default=7, help="simulator seed")
    demo.set_defaults(func=run_demo)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--store-url", help="SQLAlchemy URL (default sqlite:///var/tradeguard.db)")


def _overrides(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    values = {"host": args.host, "port": args.port, "store_url": args.store_url} | extra
    return {k: v for k, v in values.items() if v is not None}


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Settings from TOML, environment and options; invalid settings become one clear message."""
    if config is not None and not config.is_file():
        raise InputError(f"config file {config} does not exist")
    try:
        return Settings.load(config, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise InputError(f"invalid settings: {where}: {first['msg']}") from exc


def run_serve(args: argparse.Namespace) -> int:
    feed: dict[str, Any] = {}
    external: dict[str, Any] = {}
    if args.data_dir is not None:
        feed |= {"mode": "replay", "data_dir": args.data_dir}
    if args.speed is not None:
        feed["speed"] = args.speed
    if args.external_dir is not None:
        external["directory"] = args.external_dir
    extra: dict[str, Any] = {"pairs": args.pairs, "timeframe": args.timeframe}
    if feed:
        extra["feed"] = feed
    if external:
        extra["external"] = external
    return serve(load_settings(args.config, _overrides(args, **extra)))


def run_demo(args: argparse.Namespace) -> int:
    extra = {"exchange": "simulator", "feed": {"mode": "simulator", "speed": args.speed, "seed": args.seed}}
    return serve(load_settings(args.config, _overrides(args, **extra)))


def serve(settings: Settings) -> int:
    """Build the service, print a first-start admin key, and run uvicorn until interrupted."""
    service = build_service(settings)
    try:
        key = ensure_admin_key(service.store)
        if key is not None:
            sys.stdout.write(
                f"created admin API key for account 'admin' (shown once, store it now):\n{key.token}\n"
            )
        mode = settings.feed.mode
        source = {
            "live": f"live {settings.exchange} data",
            "replay": f"replay of {settings.feed.data_dir}",
            "simulator": "the built-in simulator (synthetic data)",
        }[mode]
        sys.stdout.write(
            f"tradeguard serving {', '.join(settings.pairs)} {settings.timeframe} from {source} on "
            f"http://{settings.host}:{settings.port} (docs at /docs, store {settings.store_url})\n"
        )
        sys.stdout.flush()
        config = uvicorn.Config(
            service.app,
            host=settings.host,
            port=settings.port,
            access_log=False,
            log_level="info" if log.isEnabledFor(logging.INFO) else "warning",
        )
        settle_gc()
        uvicorn.Server(config).run()
    finally:
        service.store.close()
    return 0
