"""An independent check of relay's webhook signatures, written from the documented scheme only (README, webhook
section): ``X-Relay-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Relay-Timestamp>.<raw body>")>`` — the scheme of
Stripe's and Slack's signatures (https://docs.stripe.com/webhooks#verify-manually ,
https://api.slack.com/authentication/verifying-requests-from-slack). Deliberately does not use relay's own
``sign`` / ``verify_signature``, so a change of the scheme on relay's side fails the tests."""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["consumer_verifies"]


def consumer_verifies(
    secret: str,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """What a consumer does with the standard library: recompute the HMAC over ``<timestamp>.<body>``, compare in
    constant time, and refuse timestamps more than ``tolerance`` seconds from ``now`` (replays)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
