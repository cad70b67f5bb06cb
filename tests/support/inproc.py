"""Run relay in the test's own event loop (real sockets on loopback, ports chosen by the OS) and replay captures."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import grpc

from relay.app import Relay
from relay.config_load import RelayConfig
from tests.support.fixtures import CapturedRequest, load_scenario
from tests.support.relay_proc import deep_merge

SKIP_HEADERS = {
    "host",
    "content-length",
    "connection",
    "user-agent",
    "accept-encoding",
    "content-type",
    "content-encoding",
}


def relay_config(data_dir: Path, langfuse_url: str | None = None, overrides: dict | None = None) -> RelayConfig:
    """A config for tests: loopback port 0 everywhere, fast pipeline and exporter timers."""
    base: dict = {
        "receivers": {
            "otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}, "grpc": {"endpoint": "127.0.0.1:0"}}}
        },
        "pipeline": {"idle_timeout": "300ms", "root_grace": "200ms"},
        "exporters": {
            "langfuse": {
                "batch": {"flush_interval": "20ms"},
                "reconcile_delay": "200ms",
                "retry_on_failure": {"initial_interval": "50ms", "max_interval": "300ms"},
            }
        },
        "storage": {"directory": str(data_dir)},
        "service": {"admin": {"endpoint": "127.0.0.1:0"}, "shutdown_timeout": "3s"},
    }
    if langfuse_url:
        base["exporters"]["langfuse"].update(base_url=langfuse_url, public_key="pk-lf-test", secret_key="sk-lf-test")
    return RelayConfig.model_validate(deep_merge(base, overrides or {}))


@asynccontextmanager
async def running_relay(data_dir: Path, langfuse_url: str | None = None, overrides: dict | None = None):
    """Start relay in this loop; stop it (drain) on exit."""
    relay = Relay(relay_config(data_dir, langfuse_url, overrides))
    await relay.start()
    if relay.alerting is not None:
        await relay.alerting.started()  # alerts restored, rule windows backfilled
    try:
        yield relay
    finally:
        await relay.stop()


async def settle(relay: Relay, timeout: float = 15.0) -> None:
    """Wait until relay has processed everything it accepted and exported everything it queued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = await relay.spool.pending_inbound()
        queued = sum(relay.spool.outbound_spans.values())
        if pending == 0 and queued == 0 and not relay.pipeline.assembler.groups:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(
        f"relay did not settle: inbound {pending}, outbound {queued}, open {len(relay.pipeline.assembler.groups)}"
    )


async def post_capture(
    session: aiohttp.ClientSession, base_url: str, req: CapturedRequest, extra_headers: dict | None = None
) -> int:
    """POST one captured HTTP request byte for byte; returns the status."""
    headers = {k: v for k, v in req.headers.items() if k.lower() not in SKIP_HEADERS}
    headers["Content-Type"] = req.content_type
    if req.content_encoding:
        headers["Content-Encoding"] = req.content_encoding
    headers.update(extra_headers or {})
    async with session.post(base_url + req.path, data=req.body, headers=headers) as r:
        await r.read()
        return r.status


async def grpc_capture(channel: grpc.aio.Channel, req: CapturedRequest, metadata: tuple = ()) -> bytes:
    """Send one captured gRPC request message as is (raw bytes) on its method path."""
    call = channel.unary_unary(req.path, request_serializer=None, response_deserializer=None)
    return await call(req.body, metadata=metadata or None, timeout=10)


async def replay(relay: Relay, scenario: str, extra_headers: dict | None = None) -> list[int]:
    """Replay a whole captured scenario into relay, in arrival order, over its original transport."""
    statuses = []
    reqs = load_scenario(scenario)
    async with aiohttp.ClientSession() as s:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.grpc.port}") as ch:
            for req in reqs:
                if req.transport == "grpc":
                    await grpc_capture(ch, req, tuple((extra_headers or {}).items()))
                    statuses.append(200)
                else:
                    statuses.append(await post_capture(s, f"http://127.0.0.1:{relay.http.port}", req, extra_headers))
    return statuses
