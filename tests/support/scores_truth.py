"""Ground truth of relay's scores, computed from the request bodies of a capture WITHOUT relay's code (events via
``tests.support.expected``, metrics decoded here), and helpers to wait for scores."""

from __future__ import annotations

import asyncio
import gzip
import json
import statistics
import time
from collections import defaultdict
from decimal import Decimal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from tests.support.expected import Event, _json_value, _pb_value, events
from tests.support.fixtures import load_scenario

__all__ = [
    "events_of_bodies",
    "session_truth",
    "interaction_truth",
    "metric_truth",
    "scores_settled",
    "truth_of_events",
]


def _seq(e: Event) -> int:
    return int(e.attrs.get("event.sequence") or 0)


def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _tool_figures(evs: list[Event]) -> dict:
    results = [e for e in evs if e.name == "tool_result"]
    decisions = [e for e in evs if e.name == "tool_decision"]
    failed = sum(1 for e in results if str(e.attrs.get("success")).lower() != "true")
    accepts = sum(1 for e in decisions if e.attrs.get("decision") == "accept")
    return {
        "tool_failures": failed,
        "tool_success_rate": _rate(len(results) - failed, len(results)),
        "tool_accept_rate": _rate(accepts, len(decisions)),
    }


def interaction_truth(evs: list[Event]) -> dict[str, dict]:
    """prompt.id → expected interaction scores (duration_s excluded: it needs the spans)."""
    out = {}
    for pid in {e.attrs["prompt.id"] for e in evs if e.name == "user_prompt"}:
        mine = [e for e in evs if e.attrs.get("prompt.id") == pid]
        reqs = [e for e in mine if e.name == "api_request"]
        ttfts = [float(e.attrs["ttft_ms"]) for e in reqs if e.attrs.get("ttft_ms") is not None]
        t = {
            "api_errors": sum(1 for e in mine if e.name == "api_error"),
            "cost_usd": float(sum((Decimal(str(e.attrs["cost_usd"])) for e in reqs), Decimal(0))),
            "ttft_ms_p50": statistics.median(ttfts) if ttfts else None,
            **_tool_figures(mine),
        }
        del t["tool_success_rate"]
        out[pid] = t
    return out


def _outcome(evs: list[Event]) -> str:
    """The documented rule (README "Scores"), applied to the events in sequence order."""
    evs = sorted(evs, key=_seq)
    prompts = [e for e in evs if e.name == "user_prompt"]
    last = [e for e in evs if e.attrs.get("prompt.id") == prompts[-1].attrs["prompt.id"]] if prompts else []
    calls = [e for e in last if e.name in ("api_request", "api_error")]
    if any(e.name == "api_retries_exhausted" for e in last) or (calls and calls[-1].name == "api_error"):
        return "failed"
    outcomes = [
        e
        for e in last
        if e.name in ("api_request", "api_error", "tool_result")
        or (e.name == "tool_decision" and e.attrs.get("decision") == "reject")
    ]
    if not any(e.name == "api_request" for e in calls) or (outcomes and outcomes[-1].name == "tool_decision"):
        return "abandoned"
    troubled = any(
        e.name in ("api_error", "api_retries_exhausted")
        or (e.name == "tool_result" and str(e.attrs.get("success")).lower() != "true")
        for e in evs
    )
    return "recovered" if troubled else "clean"


def truth_of_events(evs: list[Event]) -> dict[str, dict]:
    """session.id → expected session scores from a list of events."""
    out = {}
    for sid in {e.attrs["session.id"] for e in evs if e.name == "user_prompt"}:
        mine = [e for e in evs if e.attrs.get("session.id") == sid]
        reqs = [e for e in mine if e.name == "api_request"]
        errs = [e for e in mine if e.name == "api_error"]
        t = {
            "cost_usd": float(sum((Decimal(str(e.attrs["cost_usd"])) for e in reqs), Decimal(0))),
            "api_error_rate": _rate(len(errs), len(reqs) + len(errs)),
            "interactions": len({e.attrs["prompt.id"] for e in mine if e.name == "user_prompt"}),
            "retries_exhausted": sum(1 for e in mine if e.name == "api_retries_exhausted"),
            "outcome": _outcome(mine),
            **_tool_figures(mine),
        }
        del t["tool_failures"]
        out[sid] = t
    return out


def session_truth(scenario: str) -> dict[str, dict]:
    """session.id → expected session scores of a capture (metrics-based ones from :func:`metric_truth`)."""
    out = truth_of_events(events(scenario))
    for sid, m in metric_truth(scenario).items():
        if sid in out:
            out[sid].update(m)
    return out


def metric_truth(scenario: str) -> dict[str, dict]:
    """session.id → lines_changed / commits / pull_requests from the capture's metric points (delta: summed;
    cumulative: the last value of each series)."""
    series: dict[tuple, float] = {}
    wanted = ("claude_code.lines_of_code.count", "claude_code.commit.count", "claude_code.pull_request.count")
    for req in load_scenario(scenario):
        if req.signal != "metrics":
            continue
        body = gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body
        if req.content_type == "application/json":
            doc = json.loads(body)
            points = [
                (
                    m["name"],
                    m["sum"].get("aggregationTemporality") == 1,
                    {
                        **{a["key"]: _json_value(a["value"]) for a in rm.get("resource", {}).get("attributes", [])},
                        **{a["key"]: _json_value(a["value"]) for a in p.get("attributes", [])},
                    },
                    int(p.get("startTimeUnixNano", 0)),
                    int(p.get("timeUnixNano", 0)),
                    float(p["asDouble"]) if "asDouble" in p else float(p.get("asInt", 0)),
                )
                for rm in doc.get("resourceMetrics", [])
                for sm in rm.get("scopeMetrics", [])
                for m in sm.get("metrics", [])
                if m["name"] in wanted
                for p in m["sum"].get("dataPoints", [])
            ]
        else:
            msg = ExportMetricsServiceRequest.FromString(body)
            points = [
                (
                    m.name,
                    m.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
                    {
                        **{a.key: a.value.string_value for a in rm.resource.attributes},
                        **{a.key: a.value.string_value for a in p.attributes},
                    },
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.as_double if p.HasField("as_double") else float(p.as_int),
                )
                for rm in msg.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                if m.name in wanted
                for p in m.sum.data_points
            ]
        for name, delta, attrs, start, end, v in points:
            key = (
                name,
                tuple(sorted((k, str(x)) for k, x in attrs.items())),
                start if delta else 0,
                end if delta else 0,
            )
            series[key] = v
    out: dict[str, dict] = defaultdict(lambda: {})
    for (name, attrs, _s, _t), v in series.items():
        a = dict(attrs)
        sid = a.get("session.id")
        fig = {
            "claude_code.lines_of_code.count": "lines_changed",
            "claude_code.commit.count": "commits",
            "claude_code.pull_request.count": "pull_requests",
        }[name]
        out[sid][fig] = out[sid].get(fig, 0.0) + v
    return dict(out)


async def scores_settled(relay, timeout: float = 20.0) -> None:
    """Wait until no subject is due and the score outbox is empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        due = await relay.spool.db.run(
            lambda c: c.execute("SELECT COUNT(*) FROM score_subjects WHERE due_ns > 0").fetchone()[0]
        )
        pending = await relay.scores.sender.pending()
        if due == 0 and pending == 0 and not relay.scores.scorer._closed:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"scores not settled: {due} subjects due, {pending} scores queued")


def events_of_bodies(bodies: list[bytes]) -> list[Event]:
    """The Claude Code events of serialized ``ExportLogsServiceRequest`` bodies, in order."""
    out = []
    for body in bodies:
        msg = ExportLogsServiceRequest.FromString(body)
        for rl in msg.resource_logs:
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    a = {x.key: _pb_value(x.value) for x in r.attributes}
                    out.append(Event(a.get("event.name"), a))
    return out
