"""The real instrumentation libraries, live: each family runs in a child process (instrumentors patch the SDKs
globally and the Anthropic SDK spans under the global TracerProvider, so one process per family), calls the
aiohttp OpenAI/Anthropic stand-in and exports OTLP/HTTP protobuf straight to a running relay, which forwards to the
fake Langfuse and writes the ledger. Same checks as the recorded runs (``test_e2e_genai_families.check``). Families
whose libraries are not installed (the ``test`` extras install them) are skipped; OpenTelemetry's own openai-v2
instrumentation pins a different ``opentelemetry-util-genai`` than OpenLLMetry and is covered by its recording."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from tests.fakes.langfuse import FakeLangfuse
from tests.fakes.llm_provider import FakeLLMProvider
from tests.fixtures.genai.record import child_command, child_env
from tests.support.inproc import running_relay, settle
from tests.test_e2e_genai_families import check, truth

pytestmark = pytest.mark.slow

NEEDS = {
    "openinference": (
        "openai",
        "anthropic",
        "openinference.instrumentation.openai",
        "openinference.instrumentation.anthropic",
    ),
    "openllmetry": (
        "openai",
        "anthropic",
        "opentelemetry.instrumentation.openai",
        "opentelemetry.instrumentation.anthropic",
    ),
    "langfuse": ("openai", "anthropic", "langfuse.openai"),
    "sdk-native": ("openai", "anthropic"),
}


def _missing(modules: tuple[str, ...]) -> list[str]:
    out = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except ModuleNotFoundError:
            out.append(m)
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("family", sorted(NEEDS))
async def test_real_library_through_relay(tmp_path, family):
    if missing := _missing(NEEDS[family]):
        pytest.skip(f"not installed: {', '.join(missing)} (pip install -e '.[test]')")
    async with FakeLLMProvider() as provider, FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            proc = await asyncio.create_subprocess_exec(
                *child_command(family, provider.base_url, f"http://127.0.0.1:{relay.http.port}"),
                env=child_env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 90)
            assert proc.returncode == 0, err.decode()[-3000:]
            await settle(relay)
            records = [r async for b in relay.ledger.scan(0, 2**63 - 1, "default") for r in b]
        assert len(provider.calls) == 8
        calls = truth(family, json.loads(out.decode().strip().splitlines()[-1]))
        check(tmp_path / "data", family, calls, records, lf.view(), lf)
