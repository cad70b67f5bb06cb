"""Build :class:`~relay.notify.base.Notifier` instances from receiver configs, and name their integrations.

Integration ids (``relay.notify.config.integration_id``) key the notifiers returned.

The notifier modules are imported lazily, so a config without, say, Jira never imports ``relay.notify.jira.notifier``.
Each notifier class is constructed as ``cls(receiver_name, index, config)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from relay.notify.base import Notifier
from relay.notify.config import KINDS, ReceiverConfig, integration_id

__all__ = ["build_notifiers"]


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
