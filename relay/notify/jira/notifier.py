"""The Jira notifier: one Jira issue per alert group, on Jira Cloud (REST v3) or Data Center / Server (REST v2).

Lifecycle (Alertmanager's native ``jira_configs``,
https://prometheus.io/docs/alerting/latest/configuration/#jira_config , and jiralert,
https://github.com/prometheus-community/jiralert):

- **firing, no issue** → create one (summary, description, priority from severity, labels, components, custom
  fields, and the group's dedup key as a label or in ``dedup_field``);
- **firing, open issue** → update summary / priority (/ description) when their rendered value changed, then add
  a comment with the new figures when the notification is a repeat reminder, some alerts resolved, the firing
  set changed (fingerprints kept in the state) or the issue was not known from the state (found by search);
  a notification with nothing new gets no comment (``action: "unchanged"``);
- **firing, issue resolved within ``reopen_duration``** → apply ``reopen_transition`` and comment;
- **firing, issue resolved as ``wont_fix_resolution`` within ``reopen_duration``** → nothing: the issue stays
  closed and no new issue is opened (jiralert's rule); the returned state says ``action: "wont_fix"``. Once the
  resolution is older than ``reopen_duration`` — or at once when ``reopen_duration`` is 0 — a new issue is
  opened, as for any issue resolved too long ago. (Alertmanager's native receiver never reopens a won't-fix issue
  either, but excludes it from its search and so opens a new issue at the next notification; relay prefers not
  to re-file, every ``repeat_interval``, an alert someone explicitly declined, for the reopen window.)
- **firing, issue resolved longer ago** → create a new issue;
- **resolved** (``send_resolved``) → comment on the issue and apply ``resolve_transition`` when set and the
  issue is not already done; nothing when there is no issue (never creates one) or it was closed as won't-fix.

Finding the issue: ``state["issue"]`` (relay's own notification log, persisted by the outbox) is used first —
``GET /issue/{key}`` — so relay never depends on Jira's search for an issue it created. Without it (first
notification, or lost state) a JQL search by project and dedup key recovers the issue: unresolved ones, or
(when reopening is configured) ones resolved within ``reopen_duration``; newest first, an unresolved one
preferred.

**Never creating twice.** The outbox persists the returned state when :meth:`JiraNotifier.notify` returns, so the
create is always the *last* step of a call: after ``POST /issue`` succeeds the method returns ``{"issue": key, …}``
at once (a fresh issue needs no comment or transition). Every other step is idempotent on retry: updates are
re-computed from the issue's current fields, a transition is applied only from the status it leaves, and each
comment carries a reference (``ref <hash of dedup key, seq, time, status>``) that is looked up among the issue's
newest comments before posting, so a retried notification never posts it twice.

The unsafe moment is a create whose outcome is unknown: a timeout, a dropped connection, a 500/502/504, a
delivery cancelled by the outbox (its attempt timeout, or shutdown after ``service.shutdown_timeout``), or the
process killed while the request is in flight. The issue may then exist but be invisible to Jira Cloud's
eventually consistent search (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issue-search/
— recently created issues may be missing) for up to ``search_lag`` seconds. So before ``POST /issue`` the
notifier records ``pending_create: {"dedup_key", "at", "by"}`` in the group's state through the outbox's
durable checkpoint (SQLite, committed before the request leaves): ``at`` is when the create was sent, ``by`` the
latest time it can have taken effect (``at + timeout``, or the moment the failure was seen). While a
``pending_create`` is in the state (and, within one process, after a create that failed without an answer), the
next attempt searches first; when the search does not show the issue and ``search_lag`` has not passed since ``by``,
it raises a retryable :class:`NotifyError` with ``retry_after`` set to the rest of that wait instead of creating,
then searches again. A create that Jira refused (4xx) clears the record. This holds whatever ``timeout`` is
relative to the outbox's attempt timeout. The residual risk is a Jira whose search lags longer than
``search_lag`` (configure it above the lag your site shows).

Errors: :class:`relay.notify.jira.client.JiraError` (a :class:`NotifyError`): 408/429/5xx, connection errors
and timeouts are retryable with ``retry_after`` from ``Retry-After``; 400 (bad project, missing or invalid
field, unknown transition), 401, 403, 404 are permanent and carry Jira's ``errorMessages``/``errors``.
Template errors are permanent. Permanent errors are also logged (logger ``relay.notify.jira.notifier``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from relay.alert import Notification
from relay.notify.base import Checkpoint, CheckpointingNotifier, NotifyError
from relay.notify.jira.adf import adf_to_text, markup_to_adf, markup_to_wiki, truncate
from relay.notify.jira.check import check_jira
from relay.notify.jira.client import JiraClient, JiraError
from relay.notify.jira.config import JiraConfig
from relay.notify.jira.templates import render, render_value, template_context

__all__ = ["JiraNotifier", "dedup_key"]

log = logging.getLogger("relay.notify.jira.notifier")

_SUMMARY_MAX = 255
_DESCRIPTION_MAX = 32_000
_LABEL_MAX = 255
_FIELDS = ["status", "resolution", "resolutiondate", "created", "summary", "priority", "labels"]


def dedup_key(group_key: str, environment: str = "") -> str:
    """The Jira dedup key of an alert group: ``relay-`` + the first 32 hex digits of SHA-256 over
    ``environment``, a NUL byte and ``group_key`` (a valid Jira label: no spaces, 38 characters)."""
    digest = hashlib.sha256(f"{environment}\x00{group_key}".encode()).hexdigest()
    return f"relay-{digest[:32]}"


def _jira_time(value: Any) -> float | None:
    """Jira timestamp (``2026-05-01T10:00:00.000+0000``) → unix seconds; None when absent or unparseable."""
    if not isinstance(value, str) or not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(value, fmt).timestamp()
        except ValueError:
            continue
    return None


def _firing(n: Notification) -> list[str]:
    """Fingerprints of the firing alerts, sorted (kept in the state to tell a changed firing set)."""
    return sorted(a.fingerprint for a in n.firing)


def _label(value: str) -> str:
    return re.sub(r"\s+", "_", value.strip())[:_LABEL_MAX]


class JiraNotifier(CheckpointingNotifier):
    """One ``jira_configs`` entry of receiver ``receiver`` (``integration = "jira/<index>"``).

    :meth:`notify` returns (and is given back) the state ``{"issue": key, "issue_id": id, "created_at": unix
    seconds when relay created it or None, "dedup_key": …, "firing": [fingerprints], "action": "created" |
    "commented" | "unchanged" | "reopened" | "resolved" | "wont_fix" | "none"}`` — plus ``"pending_create":
    {"dedup_key", "at", "by"}`` in the state checkpointed before a create (see the module docstring). ``clock``
    returns unix seconds (injectable for tests); it decides the reopen window and the search-lag guard.
    """

    def __init__(self, receiver: str, index: int, config: JiraConfig, *, clock: Callable[[], float] = time.time):
        self.receiver = receiver
        self.integration = f"jira/{index}"
        self.send_resolved = config.send_resolved
        self.config = config
        self.client = JiraClient(config)
        self._clock = clock
        #: dedup key → (issue key, or None for a create with unknown outcome; unix seconds: when the create was
        #: made, or the latest time a create of unknown outcome can have taken effect)
        self._recent: dict[str, tuple[str | None, float]] = {}

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close()

    # ------------------------------------------------------------------------------------------------ notify
    async def notify(
        self, notification: Notification, state: dict[str, Any], checkpoint: Checkpoint | None = None
    ) -> dict[str, Any]:
        """Create, comment on, reopen or resolve the group's issue (see the module docstring). ``state`` is the
        dict returned for the previous notification of the group (``{}`` at first); ``checkpoint`` (optional)
        stores a state durably before the create is sent. Raises :class:`NotifyError`."""
        dedup = dedup_key(notification.group_key, self.config.environment)
        try:
            if notification.status == "firing":
                return await self._fire(notification, state, dedup, checkpoint)
            if not self.send_resolved:
                return dict(state)
            return await self._resolve(notification, state, dedup)
        except NotifyError as exc:
            if not exc.retryable:
                log.warning(
                    "jira notification failed permanently: %s",
                    exc,
                    extra={
                        "integration": self.integration,
                        "receiver": self.receiver,
                        "project": self.config.project,
                        "status": exc.status,
                    },
                )
            raise

    async def _fire(
        self, n: Notification, state: dict[str, Any], dedup: str, checkpoint: Checkpoint | None
    ) -> dict[str, Any]:
        issue = await self._find(state, dedup, firing=True)
        kind = self._classify(issue) if issue else "stale"
        if issue is not None and kind != "stale":
            key = issue["key"]
            out = self._state(state, issue, dedup, n)
            if kind == "wont_fix":
                log.info(
                    "jira issue %s was resolved as %r; not reopening",
                    key,
                    self.config.wont_fix_resolution,
                    extra={"integration": self.integration},
                )
                return {**out, "action": "wont_fix"}
            ctx = self._context(n, dedup, key)
            if kind == "reopen":
                await self._transition(issue, self.config.reopen_transition or "")
                log.info("jira issue %s reopened", key, extra={"integration": self.integration})
                await self._comment(key, n, ctx, dedup)
                return {**out, "action": "reopened"}
            await self._update_fields(issue, ctx)
            if n.repeat or n.resolved or state.get("issue") != key or state.get("firing") != out["firing"]:
                await self._comment(key, n, ctx, dedup)
                return {**out, "action": "commented"}
            return {**out, "action": "unchanged"}
        return await self._create(n, dedup, state, checkpoint)

    async def _resolve(self, n: Notification, state: dict[str, Any], dedup: str) -> dict[str, Any]:
        issue = await self._find(state, dedup, firing=False)
        if issue is None:
            return {**{k: v for k, v in state.items() if k != "pending_create"}, "action": "none"}
        out = self._state(state, issue, dedup, n)
        done = self._is_done(issue)
        if done and self._is_wont_fix(issue):
            return {**out, "action": "wont_fix"}
        key = issue["key"]
        await self._comment(key, n, self._context(n, dedup, key), dedup)
        if self.config.resolve_transition and not done:
            await self._transition(issue, self.config.resolve_transition, self.config.resolve_resolution)
            log.info("jira issue %s resolved", key, extra={"integration": self.integration})
        return {**out, "action": "resolved"}

    # ------------------------------------------------------------------------------------------------ finding
    def _fields(self) -> list[str]:
        extra = [self.config.dedup_field] if self.config.dedup_field else []
        if self.config.update_description:
            extra.append("description")
        return _FIELDS + extra

    def _has_dedup(self, issue: dict[str, Any], dedup: str) -> bool:
        fields = issue.get("fields") or {}
        if self.config.dedup_field:
            value = fields.get(self.config.dedup_field)
            return isinstance(value, str) and value.strip() == dedup
        return dedup in (fields.get("labels") or [])

    def _jql(self, dedup: str, firing: bool) -> str:
        project = self.config.project.replace('"', '\\"')
        if self.config.dedup_field:
            number = self.config.dedup_field.removeprefix("customfield_")
            where = f'project = "{project}" AND cf[{number}] ~ "\\"{dedup}\\""'
        else:
            where = f'project = "{project}" AND labels = "{dedup}"'
        if firing and self._reopens:
            minutes = max(1, math.ceil(self.config.reopen_duration / 60))
            where += f" AND (resolution is EMPTY OR resolutiondate >= -{minutes}m)"
        else:
            where += " AND statusCategory != Done"
        return where + " ORDER BY created DESC"

    @property
    def _reopens(self) -> bool:
        return bool(self.config.reopen_transition) and self.config.reopen_duration > 0

    async def _find(self, state: dict[str, Any], dedup: str, *, firing: bool) -> dict[str, Any] | None:
        """The group's issue: from ``state`` (GET), from this process's recent creates, else by JQL search."""
        now = self._clock()
        self._recent = {k: v for k, v in self._recent.items() if now - v[1] < self.config.search_lag}
        known = state.get("issue") if isinstance(state.get("issue"), str) else None
        if known and known.rsplit("-", 1)[0].upper() != self.config.project.upper():
            known = None  # the project was changed in the config: that issue is not ours any more
        recent_key, recent_at = self._recent.get(dedup, (None, 0.0))
        #: the latest time a create of unknown outcome can have taken effect (None: no such create)
        maybe_at = recent_at if dedup in self._recent and recent_key is None else None
        pending = state.get("pending_create")
        if isinstance(pending, dict) and pending.get("dedup_key") == dedup:
            try:
                by = float(pending.get("by", pending.get("at")) or 0.0)
            except (TypeError, ValueError):
                by = now  # unreadable: assume the worst
            maybe_at = by if maybe_at is None else max(maybe_at, by)
        for key in dict.fromkeys(k for k in (known, recent_key) if k):
            issue = await self.client.get_issue(key, self._fields())
            if issue is not None and (not firing or self._classify(issue) != "stale"):
                return issue  # resolved notifications take the known issue whatever its status
        found = [
            i for i in await self.client.search(self._jql(dedup, firing), self._fields()) if self._has_dedup(i, dedup)
        ]
        if found:
            found.sort(
                key=lambda i: (
                    not self._is_done(i),
                    _jira_time(i["fields"].get("resolutiondate")) or 0.0,
                    _jira_time(i["fields"].get("created")) or 0.0,
                ),
                reverse=True,
            )
            return found[0]
        if maybe_at is not None and now - maybe_at < self.config.search_lag:
            wait = self.config.search_lag - (now - maybe_at)
            raise JiraError(
                f"an earlier create of the Jira issue for {dedup} may have succeeded; waiting "
                f"{wait:.0f}s for Jira's search to show it before creating",
                retryable=True,
                retry_after=max(wait, 0.0),
            )
        return None

    @staticmethod
    def _is_done(issue: dict[str, Any]) -> bool:
        status = (issue.get("fields") or {}).get("status") or {}
        return (status.get("statusCategory") or {}).get("key") == "done"

    def _is_wont_fix(self, issue: dict[str, Any]) -> bool:
        resolution = ((issue.get("fields") or {}).get("resolution") or {}).get("name") or ""
        wont_fix = self.config.wont_fix_resolution
        return wont_fix is not None and wont_fix != "" and resolution.casefold() == wont_fix.casefold()

    def _classify(self, issue: dict[str, Any]) -> str:
        """``open``, ``reopen`` (done within the reopen window), ``wont_fix`` (closed as won't-fix within the
        window) or ``stale`` (done, older or reopening disabled)."""
        if not self._is_done(issue):
            return "open"
        resolved_at = _jira_time((issue.get("fields") or {}).get("resolutiondate"))
        if not self._reopens or resolved_at is None or self._clock() - resolved_at > self.config.reopen_duration:
            return "stale"
        return "wont_fix" if self._is_wont_fix(issue) else "reopen"

    def _state(self, state: dict[str, Any], issue: dict[str, Any], dedup: str, n: Notification) -> dict[str, Any]:
        same = state.get("issue") == issue["key"]
        return {
            "issue": issue["key"],
            "issue_id": str(issue.get("id", "")),
            "created_at": state.get("created_at") if same else None,
            "dedup_key": dedup,
            "firing": _firing(n),
        }

    # ------------------------------------------------------------------------------------------------ rendering
    def _context(self, n: Notification, dedup: str, issue_key: str = "") -> dict[str, Any]:
        return template_context(n, environment_name=self.config.environment, dedup_key=dedup, issue_key=issue_key)

    def _render(self, name: str, source: str, ctx: dict[str, Any]) -> str:
        try:
            return render(source, ctx)
        except Exception as exc:  # TemplateError, or e.g. ZeroDivisionError/TypeError raised by the template
            raise NotifyError(f"Jira {name} template failed: {type(exc).__name__}: {exc}", retryable=False) from None

    def _rich(self, markup: str) -> Any:
        markup = truncate(markup, _DESCRIPTION_MAX)
        return markup_to_adf(markup) if self.config.flavor == "cloud" else markup_to_wiki(markup)

    def _summary(self, ctx: dict[str, Any]) -> str:
        text = " ".join(self._render("summary", self.config.summary, ctx).split())
        return truncate(text or "relay alert", _SUMMARY_MAX)

    def _priority(self, ctx: dict[str, Any]) -> str | None:
        return self.config.priority_map.get(ctx["severity"])

    def _issue_fields(self, n: Notification, dedup: str) -> dict[str, Any]:
        cfg = self.config
        ctx = self._context(n, dedup)
        labels = [_label(self._render(f"labels[{i}]", src, ctx)) for i, src in enumerate(cfg.labels)]
        if not cfg.dedup_field:
            labels.append(dedup)
        fields: dict[str, Any] = {
            "project": {"key": cfg.project},
            "issuetype": {"name": cfg.issue_type},
            "summary": self._summary(ctx),
            "description": self._rich(self._render("description", cfg.description, ctx)),
            "labels": sorted({lb for lb in labels if lb}),
        }
        priority = self._priority(ctx)
        if priority:
            fields["priority"] = {"name": priority}
        if cfg.components:
            fields["components"] = [{"name": c} for c in cfg.components]
        for field_id, value in cfg.custom_fields.items():
            try:
                fields[field_id] = render_value(value, ctx)
            except Exception as exc:  # see _render
                raise NotifyError(f"Jira custom_fields.{field_id} template failed: {exc}", retryable=False) from None
        if cfg.dedup_field:
            fields[cfg.dedup_field] = dedup
        return fields

    # ------------------------------------------------------------------------------------------------ actions
    async def _create(
        self, n: Notification, dedup: str, state: dict[str, Any], checkpoint: Checkpoint | None
    ) -> dict[str, Any]:
        fields = self._issue_fields(n, dedup)
        now = self._clock()
        before = {k: v for k, v in state.items() if k != "pending_create"}
        if checkpoint is not None:  # durable before the request leaves: a kill or cancel below is a possible create
            await checkpoint(
                {**before, "pending_create": {"dedup_key": dedup, "at": now, "by": now + self.config.timeout}}
            )
        try:
            created = await self.client.create_issue(fields)
        except JiraError as exc:
            if exc.ambiguous:
                # the issue may exist: no create before Jira's search could show it (``search_lag``), here (memory)
                # or after a restart (the outbox keeps ``exc.state``)
                seen = self._clock()
                self._recent[dedup] = (None, seen)
                exc.state = {**before, "pending_create": {"dedup_key": dedup, "at": now, "by": seen}}
            else:
                exc.state = before  # Jira refused it: nothing was created
            raise
        key = str(created["key"])
        self._recent[dedup] = (key, now)
        log.info("jira issue %s created", key, extra={"integration": self.integration, "dedup_key": dedup})
        return {
            "issue": key,
            "issue_id": str(created.get("id", "")),
            "created_at": now,
            "dedup_key": dedup,
            "firing": _firing(n),
            "action": "created",
        }

    async def _update_fields(self, issue: dict[str, Any], ctx: dict[str, Any]) -> None:
        current = issue.get("fields") or {}
        updates: dict[str, Any] = {}
        if self.config.update_summary:
            summary = self._summary(ctx)
            if summary != current.get("summary"):
                updates["summary"] = summary
        if self.config.update_priority:
            priority = self._priority(ctx)
            if priority and priority != (current.get("priority") or {}).get("name"):
                updates["priority"] = {"name": priority}
        if self.config.update_description:
            description = self._rich(self._render("description", self.config.description, ctx))
            if description != current.get("description"):
                updates["description"] = description
        if updates:
            await self.client.update_issue(issue["key"], updates)

    async def _comment(self, key: str, n: Notification, ctx: dict[str, Any], dedup: str) -> None:
        ref = hashlib.sha256(f"{dedup}|{n.seq}|{n.created_at!r}|{n.status}".encode()).hexdigest()[:12]
        marker = f"ref {ref}"
        for comment in await self.client.recent_comments(key):
            if marker in adf_to_text(comment.get("body")):
                return  # this notification's comment is already there (a retry)
        text = self._render("comment", self.config.comment, ctx).strip()
        footer = f"relay notification {n.seq} · {ctx['notified_at'] or '-'} · {marker}"
        await self.client.add_comment(key, self._rich(f"{text}\n\n{footer}"))

    async def _transition(self, issue: dict[str, Any], name: str, resolution: str | None = None) -> None:
        """Apply the transition called ``name`` (else one leading to a status called ``name``), case-insensitive."""
        key = issue["key"]
        available = await self.client.transitions(key)
        wanted = name.casefold()
        match = next((t for t in available if str(t.get("name", "")).casefold() == wanted), None)
        if match is None:
            match = next((t for t in available if str((t.get("to") or {}).get("name", "")).casefold() == wanted), None)
        if match is None:
            status = ((issue.get("fields") or {}).get("status") or {}).get("name", "?")
            names = ", ".join(repr(t.get("name")) for t in available) or "none"
            raise JiraError(
                f"Jira transition {name!r} is not available for {key} in status {status!r} (available: {names})",
                retryable=False,
            )
        if resolution and "fields" in match and "resolution" not in (match.get("fields") or {}):
            # not on the transition's screen: Jira would refuse the whole transition (400)
            log.warning(
                "jira transition %r of %s has no resolution field on its screen; applying it without "
                "resolve_resolution %r (relay check --probe reports this)",
                name,
                key,
                resolution,
                extra={"integration": self.integration},
            )
            resolution = None
        await self.client.transition(key, str(match["id"]), resolution)

    # ------------------------------------------------------------------------------------------------ check
    async def check(self) -> list[str]:
        """Problems with this integration for ``relay check`` (empty when none): authentication, project,
        issue type, components, priorities of ``priority_map``, custom-field ids, and — on a sample issue of the
        project in the right status, when one exists — whether the reopen / resolve transition names exist."""
        return await check_jira(self.client, self.config)
