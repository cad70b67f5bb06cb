"""``pipeline.memory_limit``: relay's resident memory stays under the configured bound during a burst, by answering
503 + Retry-After (the OpenTelemetry Collector's ``memory_limiter`` semantics,
https://github.com/open-telemetry/opentelemetry-collector/blob/main/processor/memorylimiterprocessor/README.md)
— and nothing it acknowledged is lost.

The same burst first runs against relay with the limiter off, so the test proves the burst really exceeds the
bound it then checks (RSS sampled from the relay subprocess with psutil every 10 ms). Traces are held open for 3 s
(``root_grace``/``idle_timeout``), so without the limiter relay keeps the whole burst in memory; with it, relay
refuses new data and closes the oldest open traces early.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import aiohttp
import psutil
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.fakes.langfuse import FakeLangfuse
from tests.support.relay_proc import RelayProcess

LF_ENV = {"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test"}
MiB = 2**20
SPANS = 512  # per request (the OpenTelemetry SDK's default batch size)
REQUESTS = 64


def _kv(key: str, value: object) -> KeyValue:
    v = AnyValue()
    if isinstance(value, int):
        v.int_value = value
    else:
        v.string_value = str(value)
    return KeyValue(key=key, value=v)


def _body(rnd: random.Random) -> bytes:
    """One request of ``SPANS`` GenAI chat spans, 8 per trace, fresh random ids."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "burst-agent"))
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for t in range(SPANS // 8):
        trace_id, root = rnd.randbytes(16), rnd.randbytes(8)
        for k in range(8):
            sp = ss.spans.add(
                trace_id=trace_id,
                span_id=root if k == 0 else rnd.randbytes(8),
                parent_span_id=b"" if k == 0 else root,
                name=f"chat {k}",
                start_time_unix_nano=now + k,
                end_time_unix_nano=now + k + 1_000_000,
            )
            sp.attributes.extend(
                [
                    _kv("gen_ai.operation.name", "chat"),
                    _kv("gen_ai.request.model", "claude-sonnet-4-5"),
                    _kv("gen_ai.usage.input_tokens", 1000 + k),
                    _kv("gen_ai.usage.output_tokens", 20 + k),
                    _kv("session.id", f"s-{t}"),
                    _kv("gen_ai.input.messages", "x" * 200 + str(rnd.random())),
                    _kv("gen_ai.output.messages", "y" * 200),
                    _kv("server.address", "api.anthropic.com"),
                ]
            )
    return req.SerializeToString()


class _RssSampler:
    """Peak RSS of a process, sampled every 10 ms in a thread."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(2)
        return self.peak


async def _burst(url: str, bodies: list[bytes], retry: bool) -> tuple[dict[int, int], int]:
    """POST every body over 8 connections; with ``retry``, refused ones are re-sent after their Retry-After (as
    OTLP exporters do). Returns (status counts of all attempts, bodies acknowledged)."""
    statuses: dict[int, int] = {}
    acked = 0
    queue = list(bodies)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal acked
        while queue:
            body = queue.pop()
            while True:
                async with session.post(
                    url + "/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}
                ) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status == 200:
                        acked += 1
                        break
                    assert r.status == 503, r.status
                    assert float(r.headers["Retry-After"]) > 0
                    if not retry:
                        break
                    await asyncio.sleep(min(0.5, float(r.headers["Retry-After"])))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as s:
        await asyncio.gather(*(worker(s) for _ in range(8)))
    return statuses, acked


def _run(tmp_path, name: str, lf: FakeLangfuse, bodies: list[bytes], limit: int, retry: bool):
    env = {**LF_ENV, "LANGFUSE_BASE_URL": lf.base_url}
    before = len(lf.spans())
    relay = RelayProcess(
        tmp_path / name,
        env=env,
        overrides={
            "pipeline": {"memory_limit": limit, "idle_timeout": "3s", "root_grace": "3s"},  # traces held open
            "service": {"log": {"level": "warning"}},
        },
    ).start()
    try:
        time.sleep(0.3)
        idle = psutil.Process(relay.proc.pid).memory_info().rss
        sampler = _RssSampler(relay.proc.pid)
        statuses, acked = asyncio.run(_burst(relay.http_url, bodies, retry))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(lf.spans()) < before + acked * SPANS:
            time.sleep(0.1)
        peak = sampler.stop()
        print(
            f"{name}: idle {idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, limit {limit / MiB:.0f} MiB, "
            f"statuses {statuses}"
        )
        return idle, peak, statuses, acked
    finally:
        assert relay.terminate() == 0


@pytest.mark.slow
def test_memory_limit_holds_under_a_burst_and_loses_nothing(tmp_path):
    rnd = random.Random(7)
    bodies = [_body(rnd) for _ in range(REQUESTS)]
    with FakeLangfuse.run_in_thread() as lf:
        idle, peak_off, statuses_off, acked_off = _run(tmp_path, "off", lf, bodies, 0, retry=False)
        assert statuses_off == {200: REQUESTS}
        assert len(lf.spans()) == REQUESTS * SPANS and lf.duplicate_span_ids() == {}
        # a bound the burst clearly exceeds without the limiter, with room above the idle process for work
        limit = idle + max(40 * MiB, (peak_off - idle) // 2)
        assert peak_off > limit + 10 * MiB, f"burst too small: idle {idle / MiB:.0f}, peak {peak_off / MiB:.0f} MiB"

        before = len(lf.spans())
        rnd2 = random.Random(8)
        bodies2 = [_body(rnd2) for _ in range(REQUESTS)]
        _, peak_on, statuses_on, acked_on = _run(tmp_path, "on", lf, bodies2, limit, retry=True)
        assert peak_on <= limit, (
            f"RSS peak {peak_on / MiB:.0f} MiB over memory_limit {limit / MiB:.0f} MiB "
            f"(without the limiter: {peak_off / MiB:.0f} MiB)"
        )
        assert statuses_on.get(503, 0) > 0, statuses_on  # the limiter refused data (clients retried)
        assert acked_on == REQUESTS  # every request eventually got in
        assert len(lf.spans()) - before == REQUESTS * SPANS  # nothing acknowledged is lost
        assert lf.duplicate_span_ids() == {}
