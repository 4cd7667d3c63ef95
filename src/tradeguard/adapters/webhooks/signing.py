"""Standard Webhooks signatures: `whsec_` secrets and `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`.

The scheme is a few lines of HMAC, so it lives here rather than in a dependency (the `standardwebhooks`
package verifies with one secret at a time and signs text, not bytes). During a secret rotation every
active secret signs, space-separated in one `webhook-signature` header, so receivers holding either verify.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import secrets
from binascii import b2a_base64
from collections.abc import Sequence
from typing import Final

from tradeguard.errors import InputError

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32
MIN_SECRET_BYTES: Final = 24  # the spec's range: 24 to 64 bytes (192 to 512 bits)
MAX_SECRET_BYTES: Final = 64


def new_secret() -> str:
    """A fresh random secret, `whsec_` + base64 of 32 bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; InputError unless it is base64 of 24 to 64 bytes."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InputError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InputError("a webhook secret is whsec_ followed by standard base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InputError(
            f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, this one {len(key)}"
        )
    return key


def signature(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        ["v1," + b2a_base64(hmac.digest(key, signed, "sha256"), newline=False).decode() for key in keys]
    )


def webhook_headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys, msg_id, timestamp, body),
    }
