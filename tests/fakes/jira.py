"""A loopback fake of Jira (Cloud or Data Center) for the test suite (Jira Cloud REST v3
https://developer.atlassian.com/cloud/jira/platform/rest/v3/ , Data Center REST v2).

Flavours (chosen per instance):

- ``cloud``: ``Authorization: Basic base64(email:api_token)``; REST **v3 only** (``/rest/api/2/...`` answers 404
  here to catch a client using the wrong version); descriptions and comments must be ADF documents; search is
  ``GET|POST /rest/api/3/search/jql`` with ``nextPageToken`` paging, a bounded query, and only the fields asked
  for (default: none); the removed ``/rest/api/{2,3}/search`` answers **410 Gone** (CHANGE-2046).
- ``datacenter``: ``Authorization: Bearer <PAT>`` (basic auth disabled, as on DC 11); REST **v2 only**; bodies are
  wiki-markup strings; search ``POST /rest/api/2/search`` with ``startAt`` paging and ``total``.

Behaviour: projects with issue types, components and required fields; create with Jira's field validation and
error wording (``{"errorMessages": [], "errors": {field: message}}``); get (``?fields=``), update (PUT), comments
(``orderBy=-created``), transitions by id per status (workflow To Do → In Progress → Done, Done → Reopen → To Do;
reaching Done sets a resolution — ``Done`` or the one given — and ``resolutiondate``, leaving it clears them; a
field set through a transition must be on that transition's screen, shown by ``expand=transitions.fields``);
JQL subset (``tests/fakes/jira_jql.py``) with a configurable **post-create lag** (``search_lag`` seconds: an issue
is invisible to search until ``created + search_lag`` on the fake's clock); faults: status replies (e.g. 429 with
``Retry-After``, 503), dropped responses after the request took effect (``drop_response``), answers held back after
the request took effect (``hold_response``), and full outages
(connection refused) with :meth:`FakeJira.outage` / :meth:`FakeJira.restore`.

Times are unix seconds from ``clock`` (injectable; tests share one fake clock with the notifier).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.jira_model import (
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_TRANSITION_FIELDS,
    DEFAULT_WORKFLOW,
    AppliedTransition,
    FakeComment,
    FakeIssue,
    FakeProject,
)
from tests.fakes.jira_routes import _JiraRoutes, err_body
from tests.fakes.loopback import LoopbackServer, ThreadedServer, hold_answer

__all__ = [
    "FakeJira",
    "ThreadedFakeJira",
    "FakeProject",
    "FakeIssue",
    "FakeComment",
    "AppliedTransition",
    "JiraRequest",
    "JiraFault",
    "GONE_MESSAGE",
]

GONE_MESSAGE = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full "
    "migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"
)


@dataclass
class JiraRequest:
    """One request that reached the fake: ``path`` after ``/rest/api/{version}/``, JSON ``body`` (or None),
    ``status`` answered (None when the response was dropped)."""

    method: str
    version: str
    path: str
    query: dict[str, str]
    body: Any
    status: int | None = None
    fault: str | None = None


@dataclass
class JiraFault:
    """A programmed misbehaviour for requests matching ``method`` (None: any) and ``path`` (a regex searched in
    the path after ``/rest/api/N/``; None: any), used ``times`` times (None: until cleared). ``kind``:
    ``status`` (answer ``status`` with ``headers``/``body`` without doing anything), ``drop`` (do the work, then
    close the connection without an answer — the client cannot know whether it took effect), ``slow`` (wait
    ``delay`` seconds before doing anything) or ``hold`` (do the work, then wait ``delay`` seconds before
    answering — a client that gives up or dies meanwhile never learns the outcome)."""

    kind: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    times: int | None = 1
    method: str | None = None
    path: str | None = None
    hits: int = 0
    delay: float = 0.0


_err = err_body


class FakeJira(LoopbackServer, _JiraRoutes):
    """Loopback fake Jira server (aiohttp, 127.0.0.1, random port).

        ``flavor`` ``cloud`` (``user`` + ``api_token``, basic auth, v3) or ``datacenter`` (``pat``, bearer, v2);
        ``projects`` (default: ``OPS`` with Bug/Task and component ``ai-usage``); ``custom_fields`` id → (name, type);
        ``search_lag`` seconds of post-create search invisibility; ``transition_fields`` transition id → the fields on
    its screen (default: only ``Done`` (31) has ``resolution``; setting any other field through a transition is a 400,
    as on real Jira); ``clock`` unix seconds. Use ``async with
        FakeJira(...) as jira`` or :meth:`run_in_thread`. Inspection and fault methods are thread-safe.
    """

    def __init__(
        self,
        flavor: str = "cloud",
        *,
        user: str = "relay@example.com",
        api_token: str = "cloud-token",
        pat: str = "dc-pat",
        projects: list[FakeProject] | None = None,
        custom_fields: dict[str, tuple[str, str]] | None = None,
        search_lag: float = 0.0,
        transition_fields: dict[str, tuple[str, ...]] | None = None,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if flavor not in ("cloud", "datacenter"):
            raise ValueError("flavor must be cloud or datacenter")
        self.flavor, self.user, self.api_token, self.pat = flavor, user, api_token, pat
        self.version = "3" if flavor == "cloud" else "2"
        projects = projects or [FakeProject("OPS", "Operations", components=("ai-usage",))]
        self.projects = {p.key: p for p in projects}
        for i, p in enumerate(projects):
            p.id = p.id or str(10000 + i)
            p.name = p.name or p.key
        self.custom_fields = dict(DEFAULT_CUSTOM_FIELDS if custom_fields is None else custom_fields)
        self.search_lag = search_lag
        self.clock = clock
        self.workflow = {k: list(v) for k, v in DEFAULT_WORKFLOW.items()}
        self.transition_fields = dict(DEFAULT_TRANSITION_FIELDS if transition_fields is None else transition_fields)
        self.host, self.port = host, port
        self._lock = threading.RLock()
        self._issues: dict[str, FakeIssue] = {}
        self._seq: dict[str, int] = {}
        self._next_id = 10000
        self._applied: list[AppliedTransition] = []
        self._requests: list[JiraRequest] = []
        self._faults: list[JiraFault] = []

    # ------------------------------------------------------------------------------------------------ lifecycle
    runner_options = {"access_log": None, "shutdown_timeout": 0.2}

    def make_app(self) -> web.Application:
        """Jira's REST API (v2 and v3) under ``/rest/api/N/…``; ``base_url`` is the site URL (relay's ``api_url``)."""
        app = web.Application()
        app.router.add_route("*", r"/rest/api/{version:\d+}/{tail:.*}", self._handle)
        return app

    async def outage(self) -> None:
        """Stop listening: connections are refused until :meth:`restore` (data is kept)."""
        await self.stop()

    @classmethod
    def run_in_thread(cls, *args: Any, **kwargs: Any) -> ThreadedFakeJira:
        """Start a fake on its own event loop in a daemon thread (for code under test that blocks)."""
        return ThreadedFakeJira(cls(*args, **kwargs))

    # ------------------------------------------------------------------------------------------------ inspection
    def issues(self, project: str | None = None) -> list[FakeIssue]:
        """Every issue (in creation order), optionally of one project."""
        with self._lock:
            return [i for i in self._issues.values() if project is None or i.project == project]

    def issue(self, key: str) -> FakeIssue:
        """The issue ``key`` (``KeyError`` when absent)."""
        with self._lock:
            return self._issues[key]

    def comments(self, key: str) -> list[FakeComment]:
        """Comments of ``key``, oldest first."""
        with self._lock:
            return list(self._issues[key].comments)

    def transitions_applied(self, key: str | None = None) -> list[AppliedTransition]:
        """Transitions applied (via the API or :meth:`set_status`), optionally for one issue."""
        with self._lock:
            return [t for t in self._applied if key is None or t.issue == key]

    def requests(self, method: str | None = None, path: str | None = None) -> list[JiraRequest]:
        """Requests received, optionally filtered by method and a regex searched in the path."""
        with self._lock:
            return [
                r
                for r in self._requests
                if (method is None or r.method == method) and (path is None or re.search(path, r.path))
            ]

    def set_status(self, key: str, status: str, *, resolution: str | None = None, at: float | None = None) -> None:
        """Move ``key`` to ``status`` as a person would (any status; Done gets ``resolution`` or ``Done``), at
        ``at`` (default: the clock)."""
        with self._lock:
            issue = self._issues[key]
            self._move(issue, "manual", f"(set {status})", status, resolution, self.clock() if at is None else at)

    def clear(self) -> None:
        """Forget issues, requests and faults."""
        with self._lock:
            self._issues.clear()
            self._seq.clear()
            self._applied.clear()
            self._requests.clear()
            self._faults.clear()

    # ------------------------------------------------------------------------------------------------ faults
    def add_fault(self, fault: JiraFault) -> JiraFault:
        """Queue a fault (matched in order)."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(
        self,
        status: int = 503,
        times: int | None = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | str | None = None,
        body: Any = None,
    ) -> JiraFault:
        """Answer ``status`` (with ``Retry-After`` when given) to the next ``times`` matching requests."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return self.add_fault(JiraFault("status", status, headers, body, times, method, path))

    def rate_limit(
        self, retry_after: float | str = 2, times: int | None = 1, *, method: str | None = None, path: str | None = None
    ) -> JiraFault:
        """429 with ``Retry-After`` (seconds) for the next ``times`` matching requests (Jira's rate limiting)."""
        return self.fail(
            429, times, method=method, path=path, retry_after=retry_after, body=_err(["Rate limit exceeded."])
        )

    def drop_response(self, times: int | None = 1, *, method: str | None = None, path: str | None = None) -> JiraFault:
        """Process the next ``times`` matching requests, then close the connection without answering."""
        return self.add_fault(JiraFault("drop", 0, {}, None, times, method, path))

    def slow(
        self, delay: float, times: int | None = 1, *, method: str | None = None, path: str | None = None
    ) -> JiraFault:
        """Wait ``delay`` seconds (real time) before handling the next ``times`` matching requests."""
        return self.add_fault(JiraFault("slow", 0, {}, None, times, method, path, delay=delay))

    def hold_response(
        self, delay: float, times: int | None = 1, *, method: str | None = None, path: str | None = None
    ) -> JiraFault:
        """Process the next ``times`` matching requests at once, then wait ``delay`` seconds (real time) before
        answering."""
        return self.add_fault(JiraFault("hold", 0, {}, None, times, method, path, delay=delay))

    def clear_faults(self) -> None:
        """Remove every queued fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> JiraFault | None:
        with self._lock:
            for f in self._faults:
                if (f.method is None or f.method == method) and (f.path is None or re.search(f.path, path)):
                    f.hits += 1
                    if f.times is not None:
                        f.times -= 1
                        if f.times <= 0:
                            self._faults.remove(f)
                    return f
        return None

    # ------------------------------------------------------------------------------------------------ HTTP
    def _auth_error(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if self.flavor == "cloud":
            expected = "Basic " + base64.b64encode(f"{self.user}:{self.api_token}".encode()).decode()
            if header != expected:
                return web.Response(
                    status=401, text="Client must be authenticated to access this resource.", content_type="text/plain"
                )
        elif header != f"Bearer {self.pat}":
            return web.json_response(
                _err(["You are not authenticated. Authentication required to perform this operation."]), status=401
            )
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        version, path = request.match_info["version"], request.match_info["tail"].rstrip("/")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = ValueError
        rec = JiraRequest(request.method, version, path, dict(request.query), None if body is ValueError else body)
        with self._lock:
            self._requests.append(rec)
        response = self._auth_error(request)
        if response is None and path == "search" and self.flavor == "cloud":
            response = web.json_response(_err([GONE_MESSAGE]), status=410)
        if response is None and version != self.version:
            response = web.json_response(
                _err([f"This fake {self.flavor} Jira serves REST v{self.version} only"]), status=404
            )
        fault = None
        if response is None:
            fault = self._take_fault(request.method, path)
            if fault is not None and fault.kind == "slow":
                rec.fault = "slow"
                await asyncio.sleep(fault.delay)
            if fault is not None and fault.kind == "status":
                rec.fault = str(fault.status)
                response = web.json_response(
                    fault.body if fault.body is not None else _err([f"HTTP {fault.status}"]),
                    status=fault.status,
                    headers=fault.headers,
                )
        if response is None and body is ValueError:
            response = web.json_response(_err(["Unexpected character: the request body is not valid JSON"]), status=400)
        if response is None:
            with self._lock:
                status, payload = self._route(request.method, path, dict(request.query), body)
            response = web.Response(status=status) if payload is None else web.json_response(payload, status=status)
        if fault is not None and fault.kind == "hold":
            rec.fault = "hold"
            await hold_answer(request, fault.delay)
        if fault is not None and fault.kind == "drop":
            rec.fault = "drop"
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        rec.status = response.status
        return response


class ThreadedFakeJira(ThreadedServer):
    """A :class:`FakeJira` on its own event loop in a daemon thread (see ``ThreadedServer``)."""

    def __init__(self, fake: FakeJira) -> None:
        super().__init__(fake, "fake-jira")
