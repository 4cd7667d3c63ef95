"""`tradeguard keys`: create, list and revoke API keys (stored only as hashes)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

import sqlalchemy as sa

from tradeguard.adapters.store import DEFAULT_STORE_URL, SCOPES, Store
from tradeguard.errors import InputError

STORE_URL_ENV = "TRADEGUARD_STORE_URL"
LIST_COLUMNS = ("key_id", "account", "scope", "created", "revoked", "last used", "description")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="API keys authenticate bots and people (`Authorization: Bearer <key>`). Each is bound to "
        "an account and a scope; the store keeps only a hash of its secret.",
    )
    keys_sub = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = keys_sub.add_parser("create", help="issue a key and print it (once)")
    create.add_argument("--account", required=True, help="account name (created if new)")
    create.add_argument("--scope", required=True, choices=SCOPES, help="what the key may do")
    create.add_argument("--description", help="free text, e.g. the bot or person holding the key")
    _add_db_option(create)
    create.set_defaults(func=run_create)

    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    _add_db_option(listing)
    listing.set_defaults(func=run_list)

    revoke = keys_sub.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, as shown by `keys list`")
    _add_db_option(revoke)
    revoke.set_defaults(func=run_revoke)


def _add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help=f"store URL (sqlite:///PATH or postgresql://USER@HOST/DB); default ${STORE_URL_ENV} if set, "
        f"else {DEFAULT_STORE_URL}",
    )


def store_url(args: argparse.Namespace) -> str:
    """The store URL: --db, else $TRADEGUARD_STORE_URL, else the default SQLite file."""
    return args.db or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL


def run_create(args: argparse.Namespace) -> int:
    with Store.open(store_url(args)) as store:
        issued = store.create_key(args.account, args.scope, args.description, now=datetime.now(UTC))
    sys.stdout.write(f"{issued.token}\n")
    sys.stderr.write(
        f"created key {issued.key_id} (account {issued.account}, scope {issued.scope}); "
        "copy it now: it will not be shown again\n"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    with Store.open(store_url(args)) as store:
        records = store.list_keys()
    rows = [
        (
            r.key_id,
            r.account,
            r.scope,
            _time(r.created_at),
            _time(r.revoked_at),
            _time(r.last_used_at),
            r.description or "",
        )
        for r in records
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(LIST_COLUMNS, *rows, strict=False)]
    for line in (LIST_COLUMNS, *rows):
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    url = store_url(args)
    with Store.open(url) as store:
        found = store.revoke_key(args.key_id, now=datetime.now(UTC))
    if not found:
        where = sa.make_url(url).render_as_string(hide_password=True)
        raise InputError(f"no key with id {args.key_id!r} in {where}")
    sys.stdout.write(f"revoked key {args.key_id}\n")
    return 0


def _time(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%SZ}"
