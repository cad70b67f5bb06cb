"""The labels a ledger record carries (``UsageRecord.labels``): identity labels of the sender plus the tenant's
configured labels.

- Identity labels come from the configured ``pipeline.identity.metadata_attributes`` (e.g. ``team.id``,
  ``department``, ``cost_center``), read from the record's or its resource's attributes — i.e. declared by the
  sender (``OTEL_RESOURCE_ATTRIBUTES``).
- Tenant labels come from ``tenants[].labels`` in relay's config (e.g. ``project: web``).

**On a conflict the tenant's label wins**: it is configured by the operator and bound to the tenant's token, while
identity labels are whatever the sender declares, so a sender cannot move its spend out of a project budget by
setting the same key itself. The Langfuse trace metadata copies of tenant labels (``relay.<key>``, see
``relay.pipeline.context.MappingContext.identity``) are not ledger labels and are dropped here.
Built-in labels (``tenant``, ``user``, ``model``…, see ``UsageRecord.label_set``) always win over both.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ledger_labels"]


def ledger_labels(identity: Mapping[str, str], tenant: Mapping[str, str]) -> dict[str, str]:
    """``identity`` labels without the ``relay.<k>`` copies of ``tenant`` labels, with ``tenant`` labels merged over
    them (tenant wins). Values are strings; None values are dropped."""
    copies = {f"relay.{k}" for k in tenant}
    out = {k: str(v) for k, v in identity.items() if v is not None and k not in copies}
    out.update({k: str(v) for k, v in tenant.items() if v is not None})
    return out
