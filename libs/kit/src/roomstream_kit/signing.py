"""Standard Webhooks signatures (https://www.standardwebhooks.com), through its reference library.

The one definition of how roomstream signs a request to an application's endpoint: the webhooks
service's deliveries and the gateway's publish hook both use it.

`webhook-signature: v1,<base64 HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")>`;
the secret is `whsec_` + base64 of the key bytes.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
_SECRET_RE = re.compile(r"whsec_[A-Za-z0-9+/]+={0,2}")
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def new_secret() -> str:
    """A fresh random secret (32 key bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_problem(secret: str) -> str | None:
    """Why `secret` is not a usable Standard Webhooks secret, or None."""
    if not _SECRET_RE.fullmatch(secret):
        return "secret must be 'whsec_' followed by base64"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :] + "==")
    except ValueError:
        return "secret must be 'whsec_' followed by base64"
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"secret key must be {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes"
    return None


def sign_headers(secret: str, msg_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The three Standard Webhooks headers of one request."""
    signature = Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
    )
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
