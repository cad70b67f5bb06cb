"""kill -9 during exports, repeated: relay as a subprocess on one data directory, killed while Langfuse requests are
in flight, restarted, and at the end checked against the fake Langfuse (used by ``tests/test_export_once.py`` and
``bench/export_once.py``).

Each trial starts relay on the same data directory, posts ``requests`` OTLP/HTTP trace requests (one trace of
``spans`` fresh spans each: a root and its children, generic GenAI spans that relay forwards one observation per
span), waits until the fake Langfuse has received an export of this trial, then kills relay with SIGKILL after a
random pause. A final run drains everything.
"""

from __future__ import annotations

import os
import random
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.relay_proc import RelayProcess

LF_ENV = {"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test"}


def trace_request(spans: int) -> tuple[bytes, list[str]]:
    """A serialized ``ExportTraceServiceRequest`` with one trace of ``spans`` spans (root first), and their ids
    (hex). Times are now, in ns."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.scope.name = "kill-trials"
    trace_id = os.urandom(16)
    root = os.urandom(8)
    now = time.time_ns()
    ids = []
    for i in range(spans):
        s = ss.spans.add(
            trace_id=trace_id,
            span_id=root if i == 0 else os.urandom(8),
            name=f"step-{i}",
            start_time_unix_nano=now + i * 1000,
            end_time_unix_nano=now + i * 1000 + 500,
        )
        if i:
            s.parent_span_id = root
        ids.append(s.span_id.hex())
    return req.SerializeToString(), ids


def post(url: str, body: bytes) -> int:
    """POST a protobuf trace request; returns the HTTP status."""
    r = urllib.request.Request(url + "/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@dataclass
class TrialsResult:
    """What a series of trials produced: ``acked`` span ids (the client got 200 for their request), the span ids
    Langfuse received (``received``, duplicates included), ``kills`` done, and ``outcomes`` (relay_items_total by
    outcome, read from the last relay before it stopped)."""

    acked: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    kills: int = 0
    outcomes: dict[str, float] = field(default_factory=dict)
    logs: str = ""

    @property
    def duplicates(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sid in self.received:
            counts[sid] = counts.get(sid, 0) + 1
        return {k: n for k, n in counts.items() if n > 1}

    @property
    def missing(self) -> set[str]:
        return set(self.acked) - set(self.received)


def run_kill_trials(
    workdir: Path,
    lf,
    trials: int,
    *,
    requests: int = 4,
    spans: int = 5,
    max_pause: float = 0.15,
    rng: random.Random | None = None,
    overrides: dict | None = None,
    drain_timeout: float = 30.0,
) -> TrialsResult:
    """Run ``trials`` kill -9 trials against the threaded fake Langfuse ``lf`` and a final draining run; returns
    what happened (the caller asserts). ``max_pause`` bounds the random wait (seconds) between the first export of
    a trial reaching Langfuse and the kill."""
    rng = rng or random.Random()
    data = workdir / "data"
    env = {**LF_ENV, "LANGFUSE_BASE_URL": lf.base_url}
    res = TrialsResult()
    ports: dict = {}
    for _ in range(trials):
        relay = RelayProcess(data, env=env, overrides=overrides or {}, **ports).start()
        ports = {"http_port": relay.http_port, "grpc_port": relay.grpc_port, "admin_port": relay.admin_port}
        try:
            before = len(lf.accepted_requests())
            for _ in range(requests):
                body, ids = trace_request(spans)
                if post(relay.http_url, body) == 200:
                    res.acked += ids
            deadline = time.monotonic() + 5
            while len(lf.accepted_requests()) <= before and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, max_pause))
        finally:  # also when the trial fails: no daemon outlives the test
            relay.kill9()
        res.kills += 1
    relay = RelayProcess(data, env=env, overrides=overrides or {}, **ports).start()
    try:
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and not set(res.acked) <= {s.span_id for s in lf.spans()}:
            time.sleep(0.05)
        time.sleep(0.5)  # anything arriving now would be a duplicate
        for outcome in ("forwarded", "filtered", "invalid", "dead_lettered", "quarantined"):
            res.outcomes[outcome] = relay.metric("relay_items_total", outcome=outcome)
    finally:
        relay.terminate()
        res.logs = relay.logs()
    res.received = [s.span_id for s in lf.spans()]
    return res
