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
            hint.replace("relay ", f"{shlex.quote(sys.executable)} -m relay ", 1), cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
