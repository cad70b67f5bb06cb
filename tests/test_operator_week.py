"""Issue 16, "the operator's first week": what a new operator meets, tried as they would — the silence hint of a
firing Slack message pasted into a shell against a running relay, the Slack message read as a person reads it,
the admin endpoint of an idle relay (``/``, ``/metrics``, ``/readyz``)."""

from __future__ import annotations

import asyncio
import html
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import aiohttp

from relay.notify.slack.blocks import group_message
from tests.fakes.slack_samples import budget_alert, notification
from tests.support.inproc import running_relay

ROOT = Path(__file__).resolve().parents[1]


def _texts(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            out.append(node["text"])
        for v in node.values():
            if isinstance(v, (dict, list)):
                out += _texts(v)
    elif isinstance(node, list):
        for v in node:
            out += _texts(v)
    return out


def silence_hint(msg: dict) -> str:
    """The shell command a person copies from the message's ``To silence:`` line (Slack shows &lt; as <)."""
    [line] = [t for t in _texts(msg) if "To silence:" in t]
    return html.unescape(re.search(r"`([^`]+)`", line).group(1))


async def test_the_silence_hint_of_a_firing_message_works_when_pasted(tmp_path):
    alert = budget_alert(team="plat form's")  # a space and a quote: the shell must not split or eat them
    hint = silence_hint(group_message(notification([alert])))
    assert "--comment" in hint
    async with running_relay(tmp_path / "data") as relay:
        env = {**os.environ, "RELAY_ADMIN_ENDPOINT": f"127.0.0.1:{relay.admin_port}"}
        proc = await asyncio.create_subprocess_shell(  # pasted as is into a POSIX shell
            hint.replace("relay ", f"{shlex.quote(sys.executable)} -m relay ", 1),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        sid = out.decode().strip()
        silences = relay.alerting.silences
        assert silences.get(sid) is not None
        assert silences.is_silenced(alert.labels) == [sid]
        other = dict(alert.labels, **{"team.id": "plat form"})
        assert silences.is_silenced(other) == []


def test_a_firing_slack_message_shows_its_summary_once():
    alert = budget_alert()
    summary = alert.annotations["summary"]
    msg = group_message(notification([alert]))
    shown = "\n".join([msg["text"], *_texts(msg["attachments"])])
    assert shown.count(summary) == 1


def readme_metric_names() -> list[str]:
    """Every metric name in README's /metrics table, braces expanded (``a_{x,y}_total`` → a_x_total, a_y_total;
    ``*`` → the three item kinds)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| metric | meaning |") :]
    table = table[: table.index("\n\n")]
    names = []
    for row in table.splitlines()[2:]:
        if "from the first call" in row:  # labelled by model: there is no series before a model is seen
            continue
        for code in re.findall(r"`([^`]+)`", row.split("|")[1]):
            code = re.sub(r"\{(?![a-z_,]+\}_)[a-z_=,]*\}$", "", code)  # a trailing label list {kind}
            code = code.replace("*", "{spans,log_records,metric_points}")
            m = re.search(r"\{([a-z_,]+)\}", code)
            parts = m.group(1).split(",") if m else [""]
            names += [code[: m.start()] + p + code[m.end() :] if m else code for p in parts]
    return names


async def test_an_idle_relay_exposes_every_metric_the_readme_lists_and_an_index(tmp_path):
    names = readme_metric_names()
    assert "otelcol_receiver_accepted_spans_total" in names and "relay_ledger_records_total" in names
    receivers = {
        "alerting": {
            "receivers": [{"name": "hook", "webhook_configs": [{"url": "http://127.0.0.1:9/x"}]}],
            "route": {"receiver": "hook"},
        }
    }
    async with running_relay(tmp_path / "data", "http://127.0.0.1:9", receivers) as relay:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{relay.admin_port}"
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            async with http.get(f"{base}/") as r:
                assert r.status == 200
                index = await r.text()
    present = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    missing = [n for n in names if n not in present]
    assert missing == []
    for path in ("/metrics", "/healthz", "/readyz", "/api/v1/alerts", "/api/v2/silences"):
        assert path in index


async def test_readyz_stays_ready_while_langfuse_refuses_the_keys_and_says_why_loudly(tmp_path, caplog):
    from tests.fakes.langfuse import FakeLangfuse
    from tests.support.inproc import replay, settle

    caplog.set_level("INFO")
    async with FakeLangfuse({"pk-lf-test": ("sk-lf-other", "p")}) as lf:  # relay's secret key is wrong
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            await replay(relay, "protobuf-text")
            await settle(relay)
            for _ in range(100):  # the project lookup right after start
                if any("refused the project keys" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{relay.admin_port}/readyz") as r:
                    body = await r.json()
            assert r.status == 200 and body["status"] == "ready"  # it still accepts and spools
            assert body["upstreams_failing"] and "tenant default" in body["upstreams_failing"][0]
    refused = [r for r in caplog.records if "refused the project keys" in r.getMessage()]
    assert refused and refused[0].levelname == "ERROR"
    assert f"GET {lf.base_url}/api/public/projects" in refused[0].getMessage()


async def test_a_404_dead_letter_shows_the_url_it_posted_to(tmp_path):
    from tests.fakes.langfuse import FakeLangfuse
    from tests.support.inproc import replay, settle

    async with FakeLangfuse() as lf:
        lf.fail(404, times=None)
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            await replay(relay, "protobuf-text")
            await settle(relay)
            [dl] = await relay.spool.dead_letters()
    assert dl.status == 404 and f"POST {lf.base_url}/api/public/otel/v1/traces" in dl.reason


async def test_startup_with_export_off_names_the_missing_variable_and_no_zero_tenant_exporter(tmp_path, caplog):
    caplog.set_level("INFO")
    overrides = {"exporters": {"langfuse": {"base_url": "https://cloud.langfuse.com", "public_key": "pk-lf-1"}}}
    async with running_relay(tmp_path / "data", None, overrides):
        pass
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "started for 0 tenant" not in text
    assert "Langfuse export is OFF" in text and "LANGFUSE_SECRET_KEY is missing" in text


async def test_langfuse_links_appear_once_langfuse_comes_up_after_relay(tmp_path):
    from tests.fakes.langfuse import FakeLangfuse
    from tests.support.relay_proc import free_port

    port = free_port()  # Langfuse is still starting (e.g. the same compose file): nothing listens yet
    async with running_relay(tmp_path / "data", f"http://127.0.0.1:{port}") as relay:
        await asyncio.sleep(0.5)
        assert relay.links.session_url("default", "s1") is None
        async with FakeLangfuse({"pk-lf-test": ("sk-lf-test", "proj-9")}, port=port):
            for _ in range(200):
                if relay.links.session_url("default", "s1"):
                    break
                await asyncio.sleep(0.05)
            assert relay.links.session_url("default", "s1") == f"http://127.0.0.1:{port}/project/proj-9/sessions/s1"


async def test_links_settled_waits_for_the_first_project_answer(tmp_path):
    """What is posted at start-up (a report due while relay was down) waits for the project lookup's first answer,
    so it has its links: with Langfuse slow to answer, ``settled`` returns once the project id is known; with
    Langfuse down, once the first attempt failed (links left out)."""
    from tests.fakes.langfuse import FakeLangfuse, Fault
    from tests.support.relay_proc import free_port

    async with FakeLangfuse({"pk-lf-test": ("sk-lf-test", "proj-9")}) as lf:
        lf.add_fault(Fault("delay", delay=3.0, before=True, path="/api/public/projects"))
        async with running_relay(tmp_path / "slow", lf.base_url) as relay:
            assert relay.links.session_url("default", "s1") is None  # still asking
            await relay.links.settled()
            assert relay.links.session_url("default", "s1") == f"{lf.base_url}/project/proj-9/sessions/s1"
    async with running_relay(tmp_path / "down", f"http://127.0.0.1:{free_port()}") as relay:
        await relay.links.settled()
        assert relay.links.session_url("default", "s1") is None
        assert not relay.links._unsettled  # returned because the first attempt was answered (refused)


_LINKS_CHILD = """
import asyncio, sys
from relay.config import LangfuseConfig, TenantConfig
from relay.exporters.langfuse_links import LangfuseLinks

async def main():
    lf = LangfuseConfig(base_url=sys.argv[1], public_key="pk-lf-test", secret_key="sk-lf-test")
    links = LangfuseLinks([TenantConfig(name="default", langfuse=lf)])
    await links.start()
    await links.settled()
    print(links.session_url("default", "s1"))
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("langfuse", "httpx", "numpy")))
    await links.shutdown(0)

asyncio.run(main())
"""


async def test_project_lookup_asks_langfuse_without_loading_its_sdk(tmp_path):
    """The links' project lookup is one authenticated GET: relay asks it with aiohttp, so the daemon never loads the
    Langfuse SDK's REST client (with pydantic models, httpx and numpy: ~18 MiB of RSS and ~0.3 s of CPU). Run in a
    fresh interpreter, since the test process itself has the SDK loaded."""
    from tests.fakes.langfuse import FakeLangfuse

    async with FakeLangfuse({"pk-lf-test": ("sk-lf-test", "proj-9")}) as lf:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LINKS_CHILD, lf.base_url, cwd=ROOT, stdout=subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(child.communicate(), 60)
        asked = [r for r in lf.requests if r.path == "/api/public/projects"]
        assert [(r.status, r.project) for r in asked] == [(200, "proj-9")]  # authenticated with the project keys
    url, loaded = out.decode().splitlines()
    assert url == f"{lf.base_url}/project/proj-9/sessions/s1"
    assert loaded == "[]"


async def test_readyz_says_starting_until_the_receivers_listen(tmp_path, monkeypatch):
    """The admin endpoint starts before the receivers (components start downstream first): until every component
    has started, ``/readyz`` is 503 "starting" — a Kubernetes readiness probe must not send traffic to receivers that
    are not bound yet — while ``/healthz`` (liveness) already answers."""
    from relay.app import Relay
    from relay.otlp.http import OtlpHttpReceiver
    from tests.support.inproc import relay_config

    release = asyncio.Event()
    bind = OtlpHttpReceiver.start

    async def held_start(self):
        await release.wait()
        await bind(self)

    monkeypatch.setattr(OtlpHttpReceiver, "start", held_start)
    relay = Relay(relay_config(tmp_path / "data"))
    starting = asyncio.create_task(relay.start())
    try:
        while relay.admin is None or not relay.admin_port:
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{relay.admin_port}"
            async with http.get(url + "/readyz") as r:
                assert r.status == 503 and (await r.json())["components"] == ["startup"]
            async with http.get(url + "/healthz") as r:
                assert r.status == 200
            release.set()
            await starting
            async with http.get(url + "/readyz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ready"
    finally:
        release.set()
        await starting
        await relay.stop()
