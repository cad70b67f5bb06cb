"""Delivery of scheduled reports to a receiver's integrations (``alerting.receivers[]``).

- **Slack** (``slack_configs``): the Block Kit message (``relay.reports.render_slack``) posted with
  :meth:`SlackNotifier.post_report <relay.notify.slack.notifier.SlackNotifier.post_report>`, and the chart PNG
  (rendered in a child process: :func:`render_chart_apart`) uploaded into
  the same channel with Slack's files upload v2 flow (bot token with ``chat:write`` and ``files:write``). An
  incoming webhook cannot upload files: the message then says the chart was not attached. A schedule's
  ``channel`` replaces the config's channel (bot mode only).
- **Webhook** (``webhook_configs``): one ``POST`` of ``{"version": "1", "kind": "relay.usage_report", "schedule",
  "tenant", "period", "late", "report": Report.to_dict(), "markdown": …}`` signed like alert webhooks
  (``X-Relay-Timestamp``, ``X-Relay-Signature: sha256=…`` over ``"<timestamp>.<body>"`` when ``hmac_secret`` is
  set; see ``relay.notify.webhook.notifier``) with ``X-Relay-Idempotency-Key`` = first 32 hex of SHA-256 of
  ``schedule/tenant/destination/period`` plus ``:report``, equal on every retry.

Destination ids are the integration ids ``<receiver>/<kind>/<index>`` of ``relay.notify.factory``.
Errors are :class:`~relay.notify.base.NotifyError` (retryable for 408/429/5xx, timeouts and connection errors).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiohttp

from relay.notify.config import ReceiverConfig, integration_id
from relay.notify.webhook.notifier import post_signed
from relay.reports.config import ScheduleConfig
from relay.reports.model import Report
from relay.reports.render_md import render_markdown
from relay.reports.render_slack import render_slack

__all__ = ["ReceiverDeliverer", "webhook_payload", "render_chart_apart"]


def _render_png(report: Report) -> bytes | None:
    from relay.reports.chart import render_chart  # in the child process only

    return render_chart(report)


async def render_chart_apart(report: Report) -> bytes | None:
    """``relay.reports.chart.render_chart(report)`` in a short-lived child process (``spawn``: the daemon has
    threads). matplotlib and numpy take ~40 MiB of memory and ~1 s of CPU to import, and a module once imported
    stays: the daemon, which posts a chart a day or a week, should not carry them in between. Raises what the
    rendering raises (``BrokenProcessPool`` when the child died)."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, _render_png, report)
    finally:
        await asyncio.to_thread(pool.shutdown)


def webhook_payload(schedule: ScheduleConfig, report: Report) -> dict[str, Any]:
    """The JSON body a webhook destination receives (see the module doc)."""
    return {
        "version": "1",
        "kind": "relay.usage_report",
        "schedule": schedule.name,
        "tenant": report.tenant,
        "period": report.period,
        "late": report.late,
        "report": report.to_dict(),
        "markdown": render_markdown(report),
    }


class ReceiverDeliverer:
    """A :class:`~relay.reports.schedule.Deliverer` over receiver configs. ``clock`` (unix seconds) signs webhook
    requests. Slack notifiers and the HTTP session are created lazily and released by :meth:`close`."""

    def __init__(self, receivers: Sequence[ReceiverConfig], *, clock: Callable[[], float] = time.time):
        self.receivers = {r.name: r for r in receivers}
        self.clock = clock
        self._slack: dict[tuple[str, str | None], Any] = {}
        self._session: aiohttp.ClientSession | None = None

    def destinations(self, schedule: ScheduleConfig) -> list[str]:
        """Integration ids of the schedule's receiver (Slack, then webhooks; Jira configs are not report
        destinations). Raises ``KeyError`` when the receiver does not exist."""
        r = self.receivers.get(schedule.receiver)
        if r is None:
            raise KeyError(f"receiver {schedule.receiver!r} is not configured (alerting.receivers)")
        return [integration_id(r.name, "slack", i) for i in range(len(r.slack_configs))] + [
            integration_id(r.name, "webhook", i) for i in range(len(r.webhook_configs))
        ]

    async def deliver(
        self, schedule: ScheduleConfig, destination: str, report: Report, state: dict[str, Any]
    ) -> dict[str, Any]:
        """Send ``report``; ``state`` holds the steps an earlier attempt completed (Slack ``ts``, ``file_id``).
        Raises ``NotifyError``, ``KeyError`` for an unknown destination."""
        receiver, kind, index = destination.rsplit("/", 2)
        r = self.receivers[receiver]
        if kind == "slack":
            return await self._slack_post(schedule, r, int(index), report, state)
        if kind == "webhook":
            return await self._webhook_post(schedule, r, int(index), destination, report)
        raise KeyError(f"not a report destination: {destination}")

    async def _slack_post(
        self, schedule: ScheduleConfig, r: ReceiverConfig, index: int, report: Report, state: dict[str, Any]
    ) -> dict[str, Any]:
        from relay.notify.slack.notifier import SlackNotifier  # slack-sdk is heavy: import on first use

        cfg = r.slack_configs[index]
        channel = schedule.channel if schedule.channel and cfg.bot_token is not None else None
        notifier = self._slack.get((f"{r.name}/{index}", channel))
        if notifier is None:
            notifier = SlackNotifier(r.name, index, cfg.model_copy(update={"channel": channel}) if channel else cfg)
            self._slack[(f"{r.name}/{index}", channel)] = notifier
        msg = render_slack(report)
        png = await render_chart_apart(report)
        return await notifier.post_report(
            msg["blocks"],
            msg["text"],
            png,
            f"claude-code-{report.kind}-{report.tenant}-{report.period}.png",
            f"{report.title}: cost per {'hour' if report.kind == 'daily' else 'day'}",
            state=state,
        )

    async def _webhook_post(
        self, schedule: ScheduleConfig, r: ReceiverConfig, index: int, destination: str, report: Report
    ) -> dict[str, Any]:
        cfg = r.webhook_configs[index]
        body = json.dumps(webhook_payload(schedule, report), separators=(",", ":"), ensure_ascii=False).encode()
        ident = f"{schedule.name}/{report.tenant}/{destination}/{report.period}"
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        status = await post_signed(
            self._session,
            cfg,
            body,
            where=f"report webhook {destination}",
            user_agent="relay-report",
            now=self.clock,
            idempotency_key=hashlib.sha256(ident.encode()).hexdigest()[:32] + ":report",
        )
        return {"delivered": True, "status": status}

    async def close(self) -> None:
        """Close Slack clients and the HTTP session."""
        for n in self._slack.values():
            await n.close()
        self._slack.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
