"""What a mapper needs to know besides the records: the tenant, identity rules, environment and redaction.

Identity rules (observed in Claude Code's exports, ``tests/fixtures/claude-code/``): Claude Code's ``user.id`` is an
anonymous installation hash, so the Langfuse user comes first from configured attributes such as ``enduser.id``
(set through ``OTEL_RESOURCE_ATTRIBUTES``), and only last from ``user.id``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.otlp.values import as_str

__all__ = ["MappingContext", "MappedTrace", "Identity"]

REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Identity:
    """Trace-level identity: Langfuse user id, tags and trace metadata (all strings)."""

    user_id: str | None
    tags: list[str]
    metadata: dict[str, str]


@dataclass
class MappingContext:
    """Per-tenant settings the mappers apply.

    - ``user_attributes``: precedence list of attribute keys for the Langfuse user id (record attributes are
      checked before resource attributes for each key);
    - ``metadata_attributes`` / ``tag_attributes``: keys copied into trace metadata / tags (tags as ``key:value``);
    - ``environment`` / ``release``: explicit values; when None, the mappers fall back to resource attributes
      ``deployment.environment.name`` / ``deployment.environment`` and leave release unset;
    - ``forward_content``: when False, prompts, responses and tool parameters are not forwarded;
    - ``redact_patterns``: regexes replaced by ``[REDACTED]`` in forwarded content;
    - ``pricing``: the ledger's price table (``relay.usage.pricing.Pricing``); when set, other agents' calls without a
      reported cost are priced by the mapper, so Langfuse gets the same ``cost_details`` as the ledger.
    """

    tenant: str = "default"
    user_attributes: list[str] = field(default_factory=lambda: ["enduser.id", "user.email", "user.id"])
    metadata_attributes: list[str] = field(default_factory=lambda: ["team.id", "department", "cost_center"])
    tag_attributes: list[str] = field(default_factory=lambda: ["team.id", "department"])
    environment: str | None = None
    release: str | None = None
    forward_content: bool = True
    redact_patterns: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    pricing: Any = None

    def __post_init__(self) -> None:
        self._redact = [re.compile(p) for p in self.redact_patterns]
        #: Every attribute key ``identity`` reads: a map with none of them cannot change an identity.
        self.identity_keys = frozenset([*self.user_attributes, *self.metadata_attributes, *self.tag_attributes])

    def identity(self, *attr_maps: Mapping[str, Any]) -> Identity:
        """Identity from attribute maps in precedence order (e.g. record attributes, then resource attributes)."""

        def first(key: str) -> str | None:
            for m in attr_maps:
                v = m.get(key)
                if v is not None and (v := as_str(v)):
                    return v
            return None

        user = None
        for key in self.user_attributes:
            user = first(key)
            if user:
                break
        metadata = {k: v for k in self.metadata_attributes if (v := first(k))}
        metadata.update({f"relay.{k}": v for k, v in self.labels.items()})
        tags = [f"{k}:{v}" for k in self.tag_attributes if (v := first(k))]
        return Identity(user_id=user, tags=tags, metadata=metadata)

    def environment_of(self, *attr_maps: Mapping[str, Any]) -> str | None:
        """The configured environment, else ``deployment.environment.name`` / ``deployment.environment``."""
        if self.environment:
            return self.environment
        for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
            for m in attr_maps:
                v = as_str(m.get(key))
                if v:
                    return v
        return None

    def content(self, value: Any) -> Any:
        """Content to forward (prompt, response, tool parameters): None when forwarding is off or the agent
        redacted it itself (``<REDACTED>``), else the value with secrets matched by ``redact_patterns`` masked."""
        if not self.forward_content or value is None:
            return None
        if isinstance(value, str):
            if value == "<REDACTED>" or value == "":
                return None
            for pattern in self._redact:
                value = pattern.sub(REDACTED, value)
            return value
        return value


@dataclass
class MappedTrace:
    """What a mapper made of one trace's records: observations and usage records for the ledger.

    ``trace`` may be None when the records produced nothing (e.g. only startup events).
    """

    trace: Any = None  # relay.model.TraceInfo
    observations: list[Any] = field(default_factory=list)  # list[relay.model.Observation]
    usage: list[Any] = field(default_factory=list)  # list[relay.model.UsageRecord]
