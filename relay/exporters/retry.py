"""Retry policy for relay's HTTP exporters, built on tenacity.

What is retried (OTLP spec "Failures" and "OTLP/HTTP Throttling", https://opentelemetry.io/docs/specs/otlp/#failures-1;
Langfuse's OTLP endpoint, langfuse/langfuse ``web/src/pages/api/public/otel/v1/traces/index.ts``):

- HTTP 429, 502, 503, 504 and connection failures: retried forever (the spool holds the data);
- HTTP 500: retried ``max_500_retries`` times (Langfuse answers 500 for transient storage errors), then permanent;
- every other non-2xx status: permanent (never retried; the caller dead-letters the batch).

Waits follow the Collector's exporter helper (https://github.com/open-telemetry/opentelemetry-collector/blob/main/
exporter/exporterhelper/README.md, ``retry_on_failure``): exponential backoff ``initial_interval ×
multiplier^(n-1)`` capped at ``max_interval``, randomised by ``±randomization_factor``, and never shorter than the
server's ``Retry-After`` (seconds or an HTTP-date, RFC 9110 §10.2.3). There is no max elapsed time.

The exporter signals outcomes with two exceptions: ``TransientError`` (retry the same request) and
``PermanentError`` (give up on it). ``exporter_retrying`` returns the ``tenacity.AsyncRetrying`` that drives them.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_never
from tenacity.wait import wait_base, wait_exponential

from relay.config import RetryConfig

__all__ = [
    "RETRYABLE_STATUSES",
    "MAX_RETRY_AFTER",
    "TransientError",
    "PermanentError",
    "parse_retry_after",
    "check_status",
    "WaitBackoffOrRetryAfter",
    "exporter_retrying",
]

#: Statuses retried without limit (OTLP spec "Retryable Response Codes",
#: https://opentelemetry.io/docs/specs/otlp/#failures-1).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Upper bound, in seconds, on a server's Retry-After (guards against a bogus far-future HTTP-date).
MAX_RETRY_AFTER = 3600.0


class TransientError(Exception):
    """A failed attempt worth retrying with the same request body.

    ``kind`` is a short metric label (``"429"``, ``"503"``, ``"500"``, ``"connect"``, ``"timeout"``,
    ``"disconnect"``); ``status`` the HTTP status (None without a response); ``retry_after`` the server's delay
    in seconds (None when absent); ``ambiguous`` is True when the body was sent but no response came back, so the
    destination may already have stored it (a retry may duplicate: Langfuse v4 does not deduplicate re-sent spans).
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class PermanentError(Exception):
    """The destination refused the request for good: ``status`` (HTTP status, None if none) and a ``message``
    safe to store and log (no secrets, at most ~500 characters)."""

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header into seconds to wait (≥ 0, ≤ ``MAX_RETRY_AFTER``), or None when absent
    or unparseable. Accepts delay-seconds (``"120"``, also ``"1.5"``) or an HTTP-date
    (``"Wed, 21 Oct 2026 07:28:00 GMT"``); ``now`` is the Unix time to measure a date against (default: now)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def check_status(
    status: int, retry_after: str | None, message: str, *, failures_500: int, max_500_retries: int
) -> None:
    """Classify an HTTP response status: return for 2xx, raise ``TransientError`` for a retryable one (429, 502,
    503, 504, and 500 while ``failures_500`` — the 500s seen for this request so far, including this one — is at
    most ``max_500_retries``), raise ``PermanentError`` otherwise. ``message`` is the (already cleaned) body text."""
    if 200 <= status < 300:
        return
    delay = parse_retry_after(retry_after)
    if status in RETRYABLE_STATUSES or (status == 500 and failures_500 <= max_500_retries):
        raise TransientError(str(status), f"HTTP {status}: {message}", status=status, retry_after=delay)
    if status == 500:
        message = f"{message} (after {max_500_retries} retries)"
    raise PermanentError(status, f"HTTP {status}: {message}")


class WaitBackoffOrRetryAfter(wait_base):
    """tenacity wait strategy: max(jittered exponential backoff, the failed attempt's ``retry_after``), in seconds.

    Backoff for attempt n is ``min(initial_interval × multiplier^(n-1), max_interval)``, then spread uniformly over
    ``[x·(1-r), x·(1+r)]`` with ``r = randomization_factor`` (Collector
    ``config/configretry``, open-telemetry/opentelemetry-collector).
    ``rand`` (a ``random.random``-like callable) is injectable for tests.
    """

    def __init__(self, policy: RetryConfig, rand: Callable[[], float] = random.random):
        self._exp = wait_exponential(
            multiplier=policy.initial_interval, exp_base=policy.multiplier, max=policy.max_interval
        )
        self._rf = policy.randomization_factor
        self._rand = rand

    def __call__(self, retry_state: RetryCallState) -> float:
        interval = self._exp(retry_state)
        backoff = interval * (1 - self._rf + 2 * self._rf * self._rand())
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hint = getattr(exc, "retry_after", None) or 0.0
        return max(backoff, hint)


def exporter_retrying(
    policy: RetryConfig,
    *,
    sleep: Callable[[float], Awaitable[None]],
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """An ``AsyncRetrying`` that retries ``TransientError`` forever with ``WaitBackoffOrRetryAfter`` and lets any
    other exception (``PermanentError``, cancellation, the ``sleep`` callable's own exceptions) propagate as is.

    ``sleep(seconds)`` performs the waits (make it interruptible to stop promptly); ``before_sleep`` is called
    with tenacity's ``RetryCallState`` before each wait (logging, metrics, health).
    """
    return AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, TransientError)),
        wait=WaitBackoffOrRetryAfter(policy),
        stop=stop_never,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
