"""Claude Code hooks answered by relay: ``POST /hooks/claude-code`` on the OTLP/HTTP receiver's port.

Claude Code runs hooks before a prompt reaches the model (``UserPromptSubmit``) and before a tool runs
(``PreToolUse``); a hook can be a command or an HTTP endpoint that gets the hook's input JSON as its POST body
and answers with the same JSON output a command prints (https://code.claude.com/docs/en/hooks). relay serves
that endpoint, and ``relay hook claude-code`` (``relay.cli.hook``) is the command form, which forwards its stdin
here.

Why the OTLP/HTTP port: Claude Code already reaches it (``OTEL_EXPORTER_OTLP_ENDPOINT``) with the tenant's token
(``OTEL_EXPORTER_OTLP_HEADERS``), and requests are authenticated exactly like OTLP exports
(``relay.auth.TenantResolver``); the admin port is loopback-only by default and holds operator powers.

Request: the hook input (``hook_event_name``, ``session_id``, ``prompt_id``, ``prompt`` or ``tool_name`` …; only
the event name and the ids are read, prompts and tool input are never logged or kept), plus headers:

- ``Authorization: Bearer <tenant token>`` when relay has tenant tokens (else 401);
- ``X-Relay-Resource-Attributes``: the agent's ``OTEL_RESOURCE_ATTRIBUTES`` (``enduser.id=jdoe,team.id=web``), so
  the caller is identified exactly as its telemetry is (``pipeline.identity``). Without it, a session whose
  telemetry relay has already received is identified by it (:class:`SessionIdentities`);
- ``X-Relay-Hook-Failures``: how many hook calls failed open since the last successful one (``relay hook``
  sends it; counted in ``relay_hook_fail_open_total``).

Answer (200, JSON, Claude Code's hook output): ``{}`` lets it through; over a ``warn`` budget ``{"systemMessage":
…}`` (a warning shown to the user); over a ``block`` budget ``{"decision": "block", "reason": …}`` for
``UserPromptSubmit`` (the prompt is not sent) and ``{"hookSpecificOutput": {"hookEventName": "PreToolUse",
"permissionDecision": "deny", "permissionDecisionReason": …}}`` for ``PreToolUse`` (the tool does not run; Claude
sees the reason). Other events are never blocked (a ``decision: block`` means "keep going" on ``Stop``): they get
the message as a warning. Bad input: 400 with the reason (Claude Code then treats the hook as a non-blocking
error, i.e. lets the call through).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from relay.alerting.evaluation.enforce import BudgetStanding, budget_standings
from relay.alerting.evaluation.runtime import RuleRuntime
from relay.alerting.rules.schema import format_duration
from relay.auth import TenantResolver, Unauthorized
from relay.pipeline.context import MappingContext
from relay.usage.labels import ledger_labels
from relay.usage.store import LedgerChange

__all__ = [
    "HOOK_PATH",
    "ClaudeCodeHooks",
    "SessionIdentities",
    "HookDecision",
    "decide",
    "hook_output",
    "parse_resource_attributes",
    "RESOURCE_ATTRIBUTES_HEADER",
    "FAILURES_HEADER",
]

log = logging.getLogger(__name__)

#: The endpoint, on the OTLP/HTTP receiver's port.
HOOK_PATH = "/hooks/claude-code"
#: Header carrying the agent's ``OTEL_RESOURCE_ATTRIBUTES``.
RESOURCE_ATTRIBUTES_HEADER = "X-Relay-Resource-Attributes"
#: Header carrying the number of hook calls that failed open since the last successful one.
FAILURES_HEADER = "X-Relay-Hook-Failures"
#: Events whose call a budget can stop.
BLOCKING_EVENTS = ("UserPromptSubmit", "PreToolUse")
_MAX_REPORTED_FAILURES = 1_000_000
#: Budgets named in one message at most (the most overspent first).
MAX_NAMED = 3
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def parse_resource_attributes(text: str | None) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` text → attributes: comma-separated ``key=value`` pairs, values percent-decoded;
    pairs without ``=`` or with an empty key are skipped (the SDKs' behaviour,
    https://opentelemetry.io/docs/specs/otel/resource/sdk/#specifying-resource-information-via-an-environment-variable)."""
    out: dict[str, str] = {}
    for pair in (text or "").split(","):
        key, eq, value = pair.partition("=")
        key = key.strip()
        if eq and key:
            out[key] = unquote(value.strip())
    return out


class SessionIdentities:
    """Who each recent session is, learnt from its telemetry: ``(tenant, session id)`` → the ``user`` and ledger
    labels of its latest ledger record. Bounded: the ``capacity`` most recently seen sessions are kept (in memory
    only; after a restart a session is known again from its next record). Feed it the ledger's change feed
    (:meth:`observe`); cheap, on the event loop."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._by_session: OrderedDict[tuple[str, str], tuple[str | None, dict[str, str]]] = OrderedDict()

    def observe(self, changes: Sequence[LedgerChange]) -> None:
        """Remember the identity of each new or upgraded record's session."""
        sessions = self._by_session
        for ch in changes:
            rec = ch.new
            if rec is None or not rec.session_id or not (rec.user or rec.labels):
                continue
            key = (rec.tenant, rec.session_id)
            sessions[key] = (rec.user, rec.labels)
            sessions.move_to_end(key)
        while len(sessions) > self.capacity:
            sessions.popitem(last=False)

    def get(self, tenant: str, session: str) -> tuple[str | None, dict[str, str]] | None:
        """``(user, ledger labels)`` of the session, or None when relay has seen none of its telemetry."""
        return self._by_session.get((tenant, session))


@dataclass(frozen=True)
class HookDecision:
    """``action`` ``allow``, ``warn`` or ``block``; ``message`` (None when allowed) names each budget over its
    limit with its spend and when it resets; ``standings`` every enforced budget that applied."""

    action: str
    message: str | None
    standings: tuple[BudgetStanding, ...] = ()


def _money(usd: float) -> str:
    return f"${usd:,.2f}"


def _describe(s: BudgetStanding, now: float) -> str:
    scope = ", ".join(f"{k}={v}" for k, v in s.group.items() if k != "tenant") or f"tenant={s.group['tenant']}"
    text = f"budget {s.rule} ({scope}): {_money(s.spend)} spent of {_money(s.limit)} ({s.window})"
    if s.resets_at is not None:
        at = datetime.fromtimestamp(s.resets_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        text += f"; resets {at} (in {format_duration(max(s.resets_at - now, 0))})"
    return text


def decide(standings: list[BudgetStanding], now: float) -> HookDecision:
    """The decision over a caller's enforced budgets: ``block`` when a ``block`` budget is over its limit, else
    ``warn`` when a ``warn`` budget is, else ``allow``. The message names the budgets over their limit, most
    overspent first, at most :data:`MAX_NAMED` of them (then how many more)."""
    over = [s for s in standings if s.over]
    blocking = [s for s in over if s.enforce == "block"]
    named = blocking or over
    if not named:
        return HookDecision("allow", None, tuple(standings))
    named.sort(key=lambda s: s.spend / s.limit, reverse=True)
    text = "; ".join(_describe(s, now) for s in named[:MAX_NAMED])
    if len(named) > MAX_NAMED:
        text += f"; and {len(named) - MAX_NAMED} more"
    if blocking:
        return HookDecision("block", f"relay: stopped — {text}.", tuple(standings))
    return HookDecision("warn", f"relay: over budget — {text}.", tuple(standings))


def hook_output(event: str, decision: HookDecision) -> dict[str, Any]:
    """Claude Code's JSON hook output for ``decision`` on hook event ``event`` (see the module docstring)."""
    if decision.message is None:
        return {}
    if decision.action == "block" and event == "UserPromptSubmit":
        return {"decision": "block", "reason": decision.message}
    if decision.action == "block" and event == "PreToolUse":
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": decision.message,
            }
        }
    return {"systemMessage": decision.message}


class ClaudeCodeHooks:
    """The ``POST /hooks/claude-code`` handler.

    ``resolver`` authenticates requests (tenant tokens); ``contexts`` maps each tenant to its identity settings
    (``pipeline.identity`` and the tenant's labels); ``runtimes()`` returns the rules engine's loaded rules
    (``RuleEngine.runtimes``); ``sessions`` identifies callers that send no resource attributes by their session's
    telemetry; ``now`` is the clock (unix seconds).

    Metrics on ``registry``: ``relay_hook_decisions_total{tenant,event,decision}`` (``allow``/``warn``/``block``),
    ``relay_hook_fail_open_total{tenant}`` (hook calls that failed open, reported by ``relay hook`` on its next
    successful call), ``relay_hook_decision_duration_seconds`` (request read to answer).
    """

    def __init__(
        self,
        resolver: TenantResolver,
        contexts: Mapping[str, MappingContext],
        runtimes: Callable[[], list[RuleRuntime]],
        *,
        sessions: SessionIdentities | None = None,
        registry: CollectorRegistry | None = None,
        now: Callable[[], float] = time.time,
    ):
        self._resolver = resolver
        self._sessions = sessions
        self._contexts = dict(contexts)
        self._runtimes = runtimes
        self._now = now
        self.decisions = Counter(
            "relay_hook_decisions",
            "Agent hook calls answered, by event and decision",
            ["tenant", "event", "decision"],
            registry=registry,
        )
        self.fail_open = Counter(
            "relay_hook_fail_open",
            "Agent hook calls that let the call through because "
            "relay was unreachable or slow (reported by the hook on its next call)",
            ["tenant"],
            registry=registry,
        )
        self.duration = Histogram(
            "relay_hook_decision_duration_seconds",
            "Time to answer an agent hook call",
            buckets=_BUCKETS,
            registry=registry,
        )
        for tenant in self._contexts:  # every series exists from the start (dashboards, alerts on rates)
            self.fail_open.labels(tenant)
            for event in BLOCKING_EVENTS:
                for action in ("allow", "warn", "block"):
                    self.decisions.labels(tenant, event, action)

    def add_routes(self, app: web.Application) -> None:
        """Add ``POST /hooks/claude-code`` to ``app`` (before it starts)."""
        app.router.add_post(HOOK_PATH, self.handle)

    def caller_labels(
        self, tenant: str, attributes: Mapping[str, str], body: Mapping[str, Any]
    ) -> tuple[dict[str, str], set[str]]:
        """``(labels, known)``: the ledger labels a call by this caller will carry, as far as they are known before
        the call — identity labels and the tenant's labels (``relay.usage.labels.ledger_labels``), ``user`` (the
        first of ``pipeline.identity.user_attributes`` present), ``session`` and ``prompt`` from the hook input —
        and the names of every label that is known (set or not). Without ``attributes``, the user and labels of the
        session's telemetry when relay has received some."""
        ctx = self._contexts.get(tenant) or MappingContext(tenant=tenant)
        session = body.get("session_id")
        seen = self._sessions.get(tenant, session) if self._sessions and not attributes and session else None
        if seen is not None:
            user, labels = seen[0], dict(seen[1])
        else:
            ident = ctx.identity(attributes)
            user, labels = ident.user_id, ledger_labels(ident.metadata, ctx.labels)
        builtin = {"user": user, "session": session, "prompt": body.get("prompt_id")}
        labels.update({k: v for k, v in builtin.items() if isinstance(v, str) and v})
        known = set(builtin) | set(ctx.metadata_attributes) | set(ctx.labels)
        return labels, known

    def evaluate(self, tenant: str, attributes: Mapping[str, str], body: Mapping[str, Any]) -> HookDecision:
        """The decision for one hook call (see :func:`decide`)."""
        labels, known = self.caller_labels(tenant, attributes, body)
        now = self._now()
        return decide(budget_standings(self._runtimes(), tenant, labels, known, now), now)

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /hooks/claude-code``: 200 with the hook output; 400 bad input; 401 bad credentials."""
        started = time.perf_counter()
        try:
            tenant = self._resolver.resolve(request.headers, request.remote)
        except Unauthorized as e:
            return _error(401, e.message, {"WWW-Authenticate": 'Bearer realm="relay"'})
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be the hook input JSON object")
        if not isinstance(body, dict):
            return _error(400, "the body must be the hook input JSON object")
        event = body.get("hook_event_name")
        if not isinstance(event, str) or not event:
            return _error(400, "hook_event_name: required (the Claude Code hook input)")
        for key in ("session_id", "prompt_id"):
            if body.get(key) is not None and not isinstance(body[key], str):
                return _error(400, f"{key}: must be a string")
        failures = request.headers.get(FAILURES_HEADER)
        if failures:
            try:
                n = int(failures)
                if not 0 <= n <= _MAX_REPORTED_FAILURES:
                    raise ValueError
            except ValueError:
                return _error(400, f"{FAILURES_HEADER}: must be a count between 0 and {_MAX_REPORTED_FAILURES}")
            if n:
                self.fail_open.labels(tenant).inc(n)
                log.warning(
                    "hooks: %d Claude Code hook call(s) of tenant %s failed open (relay unreachable or "
                    "slow) before this one",
                    n,
                    tenant,
                )
        attributes = parse_resource_attributes(request.headers.get(RESOURCE_ATTRIBUTES_HEADER))
        decision = self.evaluate(tenant, attributes, body)
        blocking = event in BLOCKING_EVENTS
        action = decision.action if blocking or decision.action != "block" else "warn"  # what was answered
        self.decisions.labels(tenant, event if blocking else "other", action).inc()
        if action != "allow":
            log.info(
                "hooks: %s %s for tenant %s session %s: %s",
                event[:64],
                action,
                tenant,
                str(body.get("session_id"))[:64],
                decision.message,
            )
        out = web.json_response(hook_output(event, decision))
        self.duration.observe(time.perf_counter() - started)
        return out


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    log.info("hooks: refused a hook call (%d): %s", status, message)
    return web.json_response({"error": message}, status=status, headers=headers)
