"""``relay rules test``: unit tests for rule files, in the spirit of ``promtool test rules``
(https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/): usage records over simulated time
in, expected alerts at given times out. No clock is waited on; the real engine runs with a simulated clock and is
evaluated exactly as ``RuleEngine.run`` would (every ``evaluation_interval``, at ``for:`` deadlines and at window
boundaries), besides the event-driven evaluation of every record.

File format::

    rule_files: [../budgets.yaml]        # relative to this file; globs allowed
    evaluation_interval: 1m              # default 1m
    tests:
      - name: team budget crosses 80 %
        start: 2026-11-02T00:00:00Z      # time of "0m" (default 1970-01-01T00:00:00Z)
        tenant: default                  # tenant of records without one (default "default")
        input_records:
          - at: 0m                       # offset from start, or an absolute RFC 3339 time
            repeat: {every: 1m, times: 10}
            record: {kind: llm, cost_usd: 5, labels: {team.id: platform}, session_id: s1}
          - at: 12m
            key: call-1                  # same key again later = an upgrade (old → new) of that record
            record: {kind: llm, cost_usd: 1, cost_source: computed}
          - {at: 13m, key: call-1, retract: true}   # a retraction
        alert_eval:
          - at: 10m
            alertname: TeamMonthlyBudget
            expected:                    # the firing alerts (pending ones too if one is expected pending)
              - labels: {team.id: platform, severity: warning, threshold: "80"}   # + alertname, tenant
                annotations: {summary: "…"}   # optional: these keys must match exactly
                values: {spend: 50}           # optional: these values must match (1e-6 relative)
                state: firing                 # default firing; or pending

``record`` takes the fields of ``relay.model.UsageRecord`` (``kind``, ``user``, ``session_id``, ``model``,
``input_tokens``, ``cost_nanos``, ``success``, ``status_code``, ``error_class``, ``tool_name``, ``ttft_ms``,
``labels``…) plus ``cost_usd`` (converted to nano-USD).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.alert import Alert, AlertState
from relay.alerting.evaluation.engine import RuleEngine
from relay.alerting.rules.load import RulesError, RuleSet
from relay.alerting.rules.schema import RuleDuration, format_duration, parse_rule_duration
from relay.model import UsageRecord
from relay.usage.store import LedgerChange

__all__ = ["run_test_file", "TestFileResult", "parse_time"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Repeat(_Strict):
    every: RuleDuration
    times: int = Field(ge=1, le=1_000_000)


class _Input(_Strict):
    at: str | float | dt.datetime
    repeat: _Repeat | None = None
    key: str | None = None
    retract: bool = False
    record: dict[str, Any] = {}


class _Expected(_Strict):
    labels: dict[str, str] = {}
    annotations: dict[str, str] | None = None
    values: dict[str, float] | None = None
    state: str = "firing"

    @field_validator("state")
    @classmethod
    def _state(cls, v: str) -> str:
        if v not in ("firing", "pending"):
            raise ValueError("must be firing or pending")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _str(cls, v: Any) -> Any:
        return {k: str(x) for k, x in v.items()} if isinstance(v, dict) else v


class _AlertEval(_Strict):
    at: str | float | dt.datetime
    alertname: str
    expected: list[_Expected] = []


class _Test(_Strict):
    name: str = ""
    start: str | dt.datetime | None = None
    tenant: str = "default"
    input_records: list[_Input] = []
    alert_eval: list[_AlertEval] = []


class _TestFile(_Strict):
    rule_files: list[str]
    evaluation_interval: RuleDuration = 60.0
    tests: list[_Test] = []


def parse_time(value: str | float | dt.datetime, start: float) -> float:
    """Unix seconds of ``value``: an offset from ``start`` (duration) or an absolute RFC 3339 time (a timezone-less
    time is UTC). Raises ``ValueError``."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, str) and ("T" in value or value.count("-") >= 2):
        return parse_time(dt.datetime.fromisoformat(value.replace("Z", "+00:00")), start)
    return start + parse_rule_duration(value)


@dataclass
class TestFileResult:
    """Outcome of one test file: ``ok``, ``lines`` to print, counts of tests run and failed."""

    path: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    tests: int = 0
    failed: int = 0


_RECORD_FIELDS = set(UsageRecord.__dataclass_fields__) - {"key", "time_ns"}
#: Extra fields of a ``kind: score`` record (a Langfuse score, ``relay.scores.records.ScoreRecord``).
_SCORE_FIELDS = {"value", "string_value", "score", "score_source"}


def _record(spec: dict[str, Any], key: str, t: float, tenant: str) -> UsageRecord:
    data = dict(spec)
    if data.get("kind") == "score":
        from relay.usage.score_record import ScoreRecord

        unknown = set(data) - _RECORD_FIELDS - _SCORE_FIELDS
        if unknown:
            raise ValueError(f"unknown score record field(s): {', '.join(sorted(unknown))}")
        data.setdefault("tenant", tenant)
        data.setdefault("score_source", "relay")
        data["labels"] = {k: str(v) for k, v in (data.get("labels") or {}).items()}
        if data.get("value") is not None:
            data["value"] = float(data["value"])
        return ScoreRecord(key=key, time_ns=round(t * 1e9), **data)
    unknown = set(data) - _RECORD_FIELDS - {"cost_usd"}
    if unknown:
        raise ValueError(f"unknown record field(s): {', '.join(sorted(unknown))}")
    if "cost_usd" in data:
        data["cost_nanos"] = round(float(data.pop("cost_usd")) * 1_000_000_000)
        data.setdefault("cost_source", "reported")
    data.setdefault("kind", "llm")
    data.setdefault("tenant", tenant)
    data["labels"] = {k: str(v) for k, v in (data.get("labels") or {}).items()}
    return UsageRecord(key=key, time_ns=round(t * 1e9), **data)


def run_test_file(path: str) -> TestFileResult:
    """Run every test of one test file; never raises for bad content (problems become failed lines)."""
    res = TestFileResult(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
        spec = _TestFile.model_validate(raw)
    except ValidationError as e:
        res.ok = False
        res.lines.append(f"  FAILED: invalid test file {path}:")
        res.lines.extend(f"    {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        return res
    except (OSError, yaml.YAMLError) as e:
        res.ok = False
        res.lines.append(f"  FAILED: cannot load {path}: {e}")
        return res
    try:
        rules = RuleSet.load(spec.rule_files, base_dir=Path(path).parent)
    except RulesError as e:
        res.ok = False
        res.lines.append("  FAILED: rule files are invalid:")
        res.lines.extend(f"    {p}" for p in e.problems)
        return res
    for i, test in enumerate(spec.tests):
        res.tests += 1
        errors = _run_test(test, rules, spec.evaluation_interval)
        if errors:
            if res.ok:
                res.lines.append("  FAILED:")  # once per file, like promtool
            res.ok = False
            res.failed += 1
            res.lines.append(f"    name: {test.name or f'#{i}'},")
            res.lines.extend(f"    {line}" for line in errors)
            res.lines.append("")
    return res


def _run_test(test: _Test, rules: RuleSet, interval: float) -> list[str]:
    try:
        start = parse_time(test.start, 0.0) if test.start else 0.0
        events = _events(test, start)
        evals = sorted(
            ((parse_time(e.at, start), i, e) for i, e in enumerate(test.alert_eval)), key=lambda x: (x[0], x[1])
        )
    except ValueError as e:
        return [f"invalid test: {e}"]
    clock = [start]
    engine = RuleEngine(rules, on_alerts=lambda alerts: None, now=lambda: clock[0], evaluation_interval=interval)
    asyncio.run(engine.restore(None))
    ledger: dict[tuple[str, str], UsageRecord] = {}
    errors: list[str] = []

    def advance(to: float) -> None:
        while True:
            wake = engine.next_wakeup(clock[0])
            if wake > to:
                break
            clock[0] = max(wake, clock[0])
            engine.evaluate(clock[0], due_only=True)
        clock[0] = max(clock[0], to)

    ei = 0
    for t, _, ev in evals:
        while ei < len(events) and events[ei][0] <= t:
            et, rec, retract = events[ei]
            advance(et)
            old = ledger.get((rec.tenant, rec.key))
            if retract:
                ledger.pop((rec.tenant, rec.key), None)
                change = LedgerChange(old, None) if old is not None else None
            else:
                ledger[(rec.tenant, rec.key)] = rec
                change = LedgerChange(old, rec)
            if change is not None:
                engine.observe([change])
            ei += 1
        advance(t)
        engine.evaluate(t)
        errors.extend(_compare(ev, engine.alerts(), t - start, test.tenant))
    return errors


def _events(test: _Test, start: float) -> list[tuple[float, UsageRecord, bool]]:
    out: list[tuple[float, int, UsageRecord, bool]] = []
    seq = 0
    for i, inp in enumerate(test.input_records):
        t0 = parse_time(inp.at, start)
        times = [t0] if inp.repeat is None else [t0 + k * inp.repeat.every for k in range(inp.repeat.times)]
        for k, t in enumerate(times):
            key = inp.key if inp.key is not None else f"test:{i}:{k}"
            if inp.key is not None and inp.repeat is not None:
                key = f"{inp.key}:{k}"
            out.append((t, seq, _record(inp.record, key, t, test.tenant), inp.retract))
            seq += 1
    out.sort(key=lambda x: (x[0], x[1]))
    return [(t, r, retract) for t, _, r, retract in out]


def _compare(ev: _AlertEval, alerts: list[Alert], offset: float, tenant: str) -> list[str]:
    want_pending = any(e.state == "pending" for e in ev.expected)
    states = {AlertState.FIRING} | ({AlertState.PENDING} if want_pending else set())
    got = [a for a in alerts if a.name == ev.alertname and a.state in states]
    expected = [(e, {"alertname": ev.alertname, "tenant": tenant, **e.labels}) for e in ev.expected]
    unmatched = list(got)
    missing = []
    for e, labels in expected:
        hit = next((a for a in unmatched if _matches(e, labels, a)), None)
        if hit is None:
            missing.append((e, labels))
        else:
            unmatched.remove(hit)
    if not missing and not unmatched:
        return []
    # promtool's layout (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/):
    # "alertname: X, time: 10m, " then exp:/got: lists of Labels:{…} / Annotations:{…} entries; relay adds
    # State: (when pending is expected) and Values: (when a test checks values) lines.
    show_values = any(e.values is not None for e, _ in expected)

    def entries(items: list[tuple[dict[str, str], dict[str, str] | None, str, dict[str, Any] | None]]) -> str:
        if not items:
            return "[]"
        out = ["["]
        for i, (labels, alert_annotations, state, values) in enumerate(items):
            out.append(f"        {i}:")
            out.append(f"          Labels:{_prom_map(labels)}")
            if alert_annotations is not None:
                out.append(f"          Annotations:{_prom_map(alert_annotations)}")
            if want_pending:
                out.append(f"          State:{state}")
            if values is not None:
                out.append(f"          Values:{_fmt_map(values)}")
            if i < len(items) - 1:
                out[-1] += ","
        out.append("        ]")
        return "\n".join(out)

    exp = entries([(labels, e.annotations, e.state, e.values) for e, labels in expected])
    got_s = entries(
        [
            (
                a.labels,
                a.annotations,
                a.state.value,
                {k: round(v, 6) for k, v in a.values.items()} if show_values else None,
            )
            for a in got
        ]
    )
    text = f"alertname: {ev.alertname}, time: {_fmt_offset(offset)}, \n    exp:{exp}, \n    got:{got_s}"
    return text.split("\n")


def _matches(e: _Expected, labels: dict[str, str], a: Alert) -> bool:
    if a.labels != labels or a.state.value != e.state:
        return False
    if e.annotations is not None and any(a.annotations.get(k) != v for k, v in e.annotations.items()):
        return False
    if e.values is not None:
        for k, v in e.values.items():
            got = a.values.get(k)
            if got is None or not math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-9):
                return False
    return True


def _prom_map(m: dict[str, str]) -> str:
    """Prometheus' label-set text: ``{a="x", b="y\\"z"}`` (sorted, Go-quoted values)."""
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(m.items())) + "}"


def _fmt_map(m: dict[str, Any]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in sorted(m.items())) + "}"


def _fmt_offset(seconds: float) -> str:
    return format_duration(seconds) if seconds >= 0 else f"-{format_duration(-seconds)}"
