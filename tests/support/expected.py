"""What a capture contains, decoded WITHOUT relay's code: the expectations of end-to-end tests come from here."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.fixtures import load_scenario


@dataclass
class Event:
    name: str
    attrs: dict


def _pb_value(v):
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind) if kind not in ("array_value", "kvlist_value") else str(v)


def _json_value(v: dict):
    for k, x in v.items():
        if k in ("stringValue", "boolValue", "doubleValue"):
            return x
        if k == "intValue":
            return int(x)
    return None


def events(scenario: str) -> list[Event]:
    """Every Claude Code event of a capture (de-duplicated by session and sequence), in arrival order."""
    out, seen = [], set()
    for req in load_scenario(scenario):
        if req.signal != "logs":
            continue
        body = gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body
        if req.content_type == "application/json":
            tree = json.loads(body)
            records = [
                {a["key"]: _json_value(a["value"]) for a in r.get("attributes", [])}
                for rl in tree["resourceLogs"]
                for sl in rl["scopeLogs"]
                for r in sl["logRecords"]
            ]
        else:
            msg = ExportLogsServiceRequest.FromString(body)
            records = [
                {a.key: _pb_value(a.value) for a in r.attributes}
                for rl in msg.resource_logs
                for sl in rl.scope_logs
                for r in sl.log_records
            ]
        for a in records:
            key = (a.get("session.id"), a.get("event.sequence"))
            if key in seen:
                continue
            seen.add(key)
            out.append(Event(a.get("event.name"), a))
    return out


def span_names(scenario: str) -> list[str]:
    """Names of the beta spans in a capture (protobuf scenarios)."""
    names = []
    for req in load_scenario(scenario):
        if req.signal == "traces" and req.content_type != "application/json":
            body = gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body
            msg = ExportTraceServiceRequest.FromString(body)
            names += [s.name for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return names


def by_name(evs: list[Event], name: str) -> list[Event]:
    return [e for e in evs if e.name == name]
