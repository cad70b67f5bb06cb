"""Build :class:`~relay.notify.base.Notifier` instances from receiver configs, and name their integrations.

An integration id is ``<receiver name>/<kind>/<index>`` (e.g. ``team-a/slack/0`` for the first entry of
``team-a``'s ``slack_configs``), Alertmanager's ``receiver/integration[index]`` naming. It keys the outbox queue,
the notifiers' per-group state and the notification log, so it must stay stable across restarts and reloads:
reordering a receiver's configs changes it.

The notifier modules are imported lazily, so a config without, say, Jira never imports ``relay.notify.jira``.
Each notifier class is constructed as ``cls(receiver_name, index, config)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from relay.notify.base import Notifier
from relay.notify.config import ReceiverConfig

__all__ = ["KINDS", "integration_id", "integrations", "build_notifiers"]

#: (kind, ReceiverConfig field, module, class) of every integration kind.
KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("slack", "slack_configs", "relay.notify.slack", "SlackNotifier"),
    ("webhook", "webhook_configs", "relay.notify.webhook", "WebhookNotifier"),
    ("jira", "jira_configs", "relay.notify.jira", "JiraNotifier"),
)


def integration_id(receiver: str, kind: str, index: int) -> str:
    """``<receiver>/<kind>/<index>``, the stable id of one integration."""
    return f"{receiver}/{kind}/{index}"


def integrations(receiver: ReceiverConfig) -> list[tuple[str, bool]]:
    """``(integration id, send_resolved)`` of every integration of ``receiver``, in config order (Slack, then
    webhooks, then Jira)."""
    out = []
    for kind, field, _, _ in KINDS:
        for i, cfg in enumerate(getattr(receiver, field)):
            out.append((integration_id(receiver.name, kind, i), bool(getattr(cfg, "send_resolved", True))))
    return out


def build_notifiers(receivers: Iterable[ReceiverConfig]) -> dict[str, Notifier]:
    """One notifier per integration of every receiver, keyed by integration id. Raises ``ImportError`` when an
    integration kind's module is missing and whatever a notifier's constructor raises (``ValueError`` for a bad
    config)."""
    out: dict[str, Notifier] = {}
    for receiver in receivers:
        for kind, field, module, cls_name in KINDS:
            configs = getattr(receiver, field)
            if not configs:
                continue
            cls = getattr(importlib.import_module(module), cls_name)
            for i, cfg in enumerate(configs):
                out[integration_id(receiver.name, kind, i)] = cls(receiver.name, i, cfg)
    return out
