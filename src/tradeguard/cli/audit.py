"""`tradeguard audit verify`: check the audit chain offline; exit 1 naming the first bad record."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tradeguard.adapters.signing_key import AUDIT_KEY_ENV, load_public_key, load_signing_key
from tradeguard.adapters.store import DEFAULT_STORE_URL
from tradeguard.adapters.store.audit_log import AuditLog, audit_log
from tradeguard.adapters.store.store import create_store_engine
from tradeguard.cli.keys import STORE_URL_ENV
from tradeguard.core.audit import ChainHead, VerifyResult
from tradeguard.errors import InputError

_ANCHOR = re.compile(r"(\d+):([0-9a-f]{64})")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit",
        help="verify the signed, hash-chained audit trail",
        description="Every risk event is stored Ed25519-signed over RFC 8785 canonical JSON and hash-chained "
        "to its predecessor, so edits, deletions and reordering are detectable offline.",
    )
    audit_sub = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser(
        "verify",
        help="check the chain: exit 0 when intact, 1 naming the first bad record and why",
        description="Checks every record's hash and link and the signatures of the last two records, which "
        "authenticate all earlier records through the hashes; with --all-signatures, every signature too. "
        "On a failure the records up to it are checked again with every signature, to name the earliest "
        "altered one. A cut tail is only detectable against a head kept elsewhere (--anchor).",
    )
    verify.add_argument(
        "--db",
        metavar="URL",
        help=f"store URL (sqlite:///PATH or postgresql://USER@HOST/DB); default ${STORE_URL_ENV} if set, "
        f"else {DEFAULT_STORE_URL}",
    )
    verify.add_argument(
        "--public-key",
        metavar="FILE",
        type=Path,
        help=f"PEM public key (GET /v1/audit/public-key); default: derived from ${AUDIT_KEY_ENV} or the "
        "service's key file",
    )
    verify.add_argument(
        "--all-signatures", action="store_true", help="verify every record's signature (slower)"
    )
    verify.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes verifying signatures with --all-signatures (default: the number of CPUs)",
    )
    verify.add_argument(
        "--anchor",
        metavar="SEQ:HASH",
        help="a head recorded earlier (seq and hash printed by a previous verify): the chain must contain "
        "it, which also detects a cut tail",
    )
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    url = args.db or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    anchor = _anchor(args.anchor)
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    key = _public_key(args.public_key)
    _require_database(url)
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(audit_log.name):
                where = sa.make_url(url).render_as_string(hide_password=True)
                raise InputError(f"{where} has no audit log (not a tradeguard store, or never migrated)")
        result = AuditLog(engine).verify(
            key, all_signatures=args.all_signatures, jobs=args.jobs, anchor=anchor
        )
    finally:
        engine.dispose()
    sys.stdout.write(describe(result) + "\n")
    return 0 if result.ok else 1


def describe(result: VerifyResult) -> str:
    """The one-line verdict `audit verify` prints."""
    if result.ok:
        head = result.head.hash if result.head is not None and result.head.seq else "none (empty log)"
        return (
            f"ok: {result.checked} records, chain intact, head {head} "
            f"(seq {result.head.seq if result.head else 0}; {result.signatures_verified} signatures verified)"
        )
    problem = result.problem
    assert problem is not None
    where = f"seq {problem.seq}" if problem.seq is not None else "the end"
    return f"FAIL at {where} (id {problem.id or '-'}): {problem.reason}: {problem.detail}"


def _public_key(path: Path | None) -> Ed25519PublicKey:
    if path is not None:
        return load_public_key(path)
    return load_signing_key(create=False).public_key


def _anchor(text: str | None) -> ChainHead | None:
    if text is None:
        return None
    match = _ANCHOR.fullmatch(text.strip().lower())
    if match is None:
        raise InputError(f"--anchor must be SEQ:HASH (a seq and 64 hex digits), got {text!r}")
    return ChainHead(int(match.group(1)), match.group(2))


def _require_database(url: str) -> None:
    """Refuse a SQLite path that does not exist (rather than creating an empty database)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return  # create_store_engine explains
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if (
        database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        raise InputError(f"no database at {database}")
