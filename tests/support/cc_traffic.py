"""Generated Claude Code traffic for alerting tests and benchmarks: real captured event records (from the fixtures)
cloned with fresh ids, the current time and chosen figures, encoded as OTLP/HTTP protobuf log requests exactly as
Claude Code sends them (scope ``com.anthropic.claude_code.events``, attributes as captured).
"""

from __future__ import annotations

import gzip
import itertools
import time
import uuid
from functools import cache
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from relay.otlp.values import attrs_to_dict, dict_to_attrs
from tests.support.fixtures import load_scenario

__all__ = ["CCTraffic"]

_SEQ = itertools.count(1000)


@cache
def _templates() -> dict[str, tuple[bytes, str, bytes]]:
    """event name → (resource bytes, scope name, log record bytes) of the first captured record of that name."""
    out: dict[str, tuple[bytes, str, bytes]] = {}
    for scenario in ("protobuf-tools", "protobuf-err529"):
        for r in load_scenario(scenario):
            if not r.path.endswith("/v1/logs"):
                continue
            body = gzip.decompress(r.body) if r.content_encoding == "gzip" else r.body
            req = ExportLogsServiceRequest.FromString(body)
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        name = attrs_to_dict(lr.attributes).get("event.name")
                        if name and name not in out:
                            out[name] = (rl.resource.SerializeToString(), sl.scope.name, lr.SerializeToString())
    return out


class CCTraffic:
    """Events of one Claude Code user and session. ``resource`` overrides resource attributes (e.g.
    ``{"team.id": "platform", "enduser.id": "jdoe"}``); every event gets a fresh prompt id unless given."""

    def __init__(self, session: str | None = None, resource: dict[str, Any] | None = None):
        self.session = session or str(uuid.uuid4())
        self.resource = dict(resource or {})
        self.prompt = str(uuid.uuid4())

    def event(self, name: str, **attrs: Any) -> tuple[str, dict[str, Any], int]:
        """One event: its name, attribute overrides and time (now, unix ns)."""
        return name, attrs, time.time_ns()

    def api_request(
        self, cost_usd: float, model: str = "claude-opus-5-5", **attrs: Any
    ) -> tuple[str, dict[str, Any], int]:
        """A successful API call costing ``cost_usd`` (USD), with a fresh ``request_id``."""
        return self.event(
            "api_request",
            cost_usd=cost_usd,
            cost_usd_micros=round(cost_usd * 1e6),
            model=model,
            request_id=f"req_{uuid.uuid4().hex[:24]}",
            **attrs,
        )

    def api_error(self, status_code: int = 500, error: str = "Internal server error", **attrs: Any):
        """A failed API call with ``status_code`` and a fresh ``request_id``."""
        return self.event(
            "api_error", status_code=status_code, error=error, request_id=f"req_{uuid.uuid4().hex[:24]}", **attrs
        )

    def request(self, *events: tuple[str, dict[str, Any], int]) -> bytes:
        """An ``ExportLogsServiceRequest`` (serialized protobuf) carrying ``events`` in order."""
        tpl = _templates()
        req = ExportLogsServiceRequest()
        by_scope: dict[str, Any] = {}
        rl = req.resource_logs.add()
        first = tpl[events[0][0]] if events else next(iter(tpl.values()))
        rl.resource.ParseFromString(first[0])
        res = attrs_to_dict(rl.resource.attributes)
        res.update(self.resource)
        del rl.resource.attributes[:]
        dict_to_attrs(res, rl.resource.attributes)
        for name, overrides, t in events:
            _, scope, record = tpl[name]
            sl = by_scope.get(scope)
            if sl is None:
                sl = by_scope[scope] = rl.scope_logs.add()
                sl.scope.name = scope
            lr = LogRecord.FromString(record)
            a = attrs_to_dict(lr.attributes)
            a.update(
                {
                    "session.id": self.session,
                    "prompt.id": overrides.pop("prompt.id", self.prompt),
                    "event.sequence": next(_SEQ),
                    "event.timestamp": _iso(t),
                }
            )
            a.update(self.resource)
            a.update(overrides)
            del lr.attributes[:]
            dict_to_attrs(a, lr.attributes)
            lr.time_unix_nano = lr.observed_time_unix_nano = t
            lr.trace_id = b""
            lr.span_id = b""
            sl.log_records.append(lr)
        return req.SerializeToString()


def _iso(t_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ns / 1e9)) + f".{(t_ns // 1_000_000) % 1000:03d}Z"
