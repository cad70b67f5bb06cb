"""The notifier interface: one integration of a receiver (a Slack channel, a Jira project, a webhook URL).

The durable outbox (``relay.alerting.dispatch.outbox``) calls :meth:`Notifier.notify` for each queued
:class:`~relay.alert.Notification`, in order per (integration, group key), and persists the returned
state dict for that pair (e.g. Slack's ``channel`` + ``ts`` of the first message, Jira's issue key), passing it
back with the next notification of the same group. A notifier therefore never needs its own storage for
"which message/issue belongs to this group".

Errors: raise :class:`NotifyError` with ``retryable=True`` (connection errors, timeouts, 429, 5xx; with
``retry_after`` seconds when the service said so) to have the outbox retry with backoff, or ``retryable=False``
for permanent failures (401/403, bad channel, invalid payload), which the outbox records as failed with the
reason (logs, metrics) instead of retrying forever.

Calls that are not idempotent (a Slack post, a Jira create) need a record written *before* they are sent, so a
delivery that is cancelled, times out or dies with the process is known as "maybe done" at its next attempt.
The outbox calls :meth:`Notifier.deliver` with a ``checkpoint`` coroutine for that: ``await checkpoint(state)``
durably replaces the group's stored state (committed to SQLite before it returns); the next attempt of the same
notification — in this process or after a restart — receives that state unless the attempt returned or raised
:class:`NotifyError` with ``state`` first.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any

from relay.alert import Notification

__all__ = ["Checkpoint", "CheckpointingNotifier", "Notifier", "NotifyError"]

#: ``await checkpoint(state)``: store ``state`` for the group durably now (see the module docstring).
Checkpoint = Callable[[dict[str, Any]], Awaitable[None]]


class NotifyError(Exception):
    """A failed delivery. ``retryable``: try again later; ``retry_after``: seconds the service asked to wait
    (``Retry-After``), None when it did not say; ``status``: the HTTP status when there was one; ``state``: a
    state dict the outbox must keep although the delivery failed (e.g. "a create was sent but its answer lost"),
    passed to the retry — None keeps the previous state."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        state: dict | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.state = state


class Notifier(abc.ABC):
    """One integration of a receiver. ``receiver`` is the receiver's name from the config, ``integration`` a
    stable id of this integration within it (e.g. ``slack/0``), ``send_resolved`` whether resolved
    notifications are wanted (Alertmanager defaults: Slack false, webhook and Jira true)."""

    receiver: str
    integration: str
    send_resolved: bool

    @abc.abstractmethod
    async def notify(self, notification: Notification, state: dict[str, Any]) -> dict[str, Any]:
        """Deliver ``notification``. ``state`` is what this method returned for the previous notification of
        the same group (``{}`` for the first). Returns the state to keep. Raises :class:`NotifyError`."""

    async def deliver(
        self, notification: Notification, state: dict[str, Any], checkpoint: Checkpoint | None = None
    ) -> dict[str, Any]:
        """What the outbox calls: :meth:`notify` with a ``checkpoint`` to record "about to send" durably before
        a non-idempotent call. The default ignores ``checkpoint``; notifiers with such calls derive from
        :class:`CheckpointingNotifier`."""
        return await self.notify(notification, state)

    async def close(self) -> None:  # noqa: B027 (optional hook: most notifiers hold connections)
        """Release connections (default: nothing)."""


class CheckpointingNotifier(Notifier):
    """A notifier with non-idempotent calls (a Slack post, a Jira create): its :meth:`notify` takes the outbox's
    ``checkpoint`` too, and :meth:`deliver` passes it on."""

    @abc.abstractmethod
    async def notify(
        self, notification: Notification, state: dict[str, Any], checkpoint: Checkpoint | None = None
    ) -> dict[str, Any]:
        """As :meth:`Notifier.notify`; ``checkpoint`` (optional) stores a state durably before a non-idempotent
        call is sent."""

    async def deliver(
        self, notification: Notification, state: dict[str, Any], checkpoint: Checkpoint | None = None
    ) -> dict[str, Any]:
        """:meth:`notify` with the outbox's durable ``checkpoint``."""
        return await self.notify(notification, state, checkpoint)
