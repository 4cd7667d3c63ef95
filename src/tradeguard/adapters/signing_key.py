"""The Ed25519 key that signs the audit trail: from the environment, or a file generated on first start.

`TRADEGUARD_AUDIT_KEY` (if set) holds the private key: base64 (standard or URL-safe, padding optional) of
the raw 32-byte seed, or a PKCS#8 PEM. Otherwise the key lives in a PEM file (default
`var/audit_ed25519.pem`, relative to the working directory, or `TRADEGUARD_AUDIT_KEY_FILE`), created with
mode 0600 on first start. A key file that group or others may access is refused, as ssh does. Several
replicas sharing one audit chain must share one key (set the variable on each). Errors never include key
material.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tradeguard.core.audit import key_id_of
from tradeguard.errors import DataNotFoundError, InputError

AUDIT_KEY_ENV = "TRADEGUARD_AUDIT_KEY"
AUDIT_KEY_FILE_ENV = "TRADEGUARD_AUDIT_KEY_FILE"
DEFAULT_KEY_FILE = Path("var/audit_ed25519.pem")
KEY_FILE_MODE = 0o600

log = logging.getLogger(__name__)


class AuditKey:
    """An Ed25519 private key that signs audit records (implements `core.audit.Signer`)."""

    __slots__ = ("_private", "key_id", "public_key", "source")

    def __init__(self, private_key: Ed25519PrivateKey, source: str) -> None:
        self._private = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.source = source  # "environment" or the key file's path, for messages

    @classmethod
    def generate(cls) -> AuditKey:
        """A fresh key held in memory only (tests, benchmarks)."""
        return cls(Ed25519PrivateKey.generate(), "memory")

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def public_key_pem(self) -> str:
        return public_key_pem(self.public_key)

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (what the key file holds)."""
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_document(self) -> dict[str, Any]:
        """What `GET /v1/audit/public-key` serves: enough to verify records offline."""
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {
            "algorithm": "Ed25519",
            "key_id": self.key_id,
            "public_key_pem": self.public_key_pem(),
            "public_key_base64url": base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii"),
        }

    def __repr__(self) -> str:
        return f"AuditKey(key_id={self.key_id!r}, source={self.source!r})"


def key_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """The key file: $TRADEGUARD_AUDIT_KEY_FILE, else `var/audit_ed25519.pem`."""
    environ = os.environ if environ is None else environ
    return Path(environ[AUDIT_KEY_FILE_ENV]) if environ.get(AUDIT_KEY_FILE_ENV) else DEFAULT_KEY_FILE


def load_signing_key(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None, create: bool = True
) -> AuditKey:
    """The audit key: $TRADEGUARD_AUDIT_KEY if set, else the key file (generated when absent and `create`)."""
    environ = os.environ if environ is None else environ
    value = environ.get(AUDIT_KEY_ENV, "").strip()
    if value:
        return AuditKey(parse_private_key(value, AUDIT_KEY_ENV), "environment")
    path = key_file_path(environ) if path is None else path
    if not path.exists():
        if not create:
            raise DataNotFoundError(f"no audit key: {AUDIT_KEY_ENV} is not set and {path} does not exist")
        created = _create_key_file(path)
        if created is not None:
            return created
    return _read_key_file(path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (a public key, or a private key whose public half is taken)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read public key {path}: {exc.strerror}") from exc
    if b"PRIVATE KEY" in data:
        return parse_private_key(data.decode("ascii", "replace"), str(path)).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise InputError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def parse_private_key(text: str, where: str) -> Ed25519PrivateKey:
    """A private key from PKCS#8 PEM or base64 of the raw 32-byte seed; `where` names the source."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            raise InputError(f"{where}: not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InputError(f"{where}: holds a {type(key).__name__}, not an Ed25519 private key")
        return key
    standard = text.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: neither PEM nor base64") from None
    if len(raw) != 32:
        raise InputError(f"{where}: an Ed25519 private key is 32 bytes, this decodes to {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _read_key_file(path: Path) -> AuditKey:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"audit key {path} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise InputError(
                f"audit key {path} is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"run `chmod 600 {path}`"
            )
        text = path.read_text("ascii", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read audit key {path}: {exc.strerror}") from exc
    return AuditKey(parse_private_key(text, str(path)), str(path))


def _create_key_file(path: Path) -> AuditKey | None:
    """Write a new key to `path` (mode 0600) unless another process just did: then None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = AuditKey(Ed25519PrivateKey.generate(), str(path))
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        try:
            os.fchmod(fd, KEY_FILE_MODE)  # whatever the umask
            os.write(fd, key.private_key_pem())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # atomic, and fails if the key appeared meanwhile: never overwrite
        except FileExistsError:
            return None
    finally:
        temporary.unlink(missing_ok=True)
    log.warning("generated audit signing key %s in %s (mode 0600): back it up", key.key_id, path)
    return key
