"""API keys and personal tokens: random, shown once, stored as a SHA-256 digest.

The secrets are 32 random bytes, so a fast digest is as safe as a slow KDF here and lets the
decision hot path look a key up with one dictionary access.
"""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "ovk_"
TOKEN_PREFIX = "ovt_"  # noqa: S105 - a public prefix, not a secret


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> tuple[str, str, str]:
    """Return (secret, display prefix, digest)."""
    secret = prefix + secrets.token_urlsafe(32)
    return secret, secret[: len(prefix) + 6], digest(secret)
