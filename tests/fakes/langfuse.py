"""A loopback fake of the Langfuse server for the test suite (Langfuse's OTLP endpoint,
https://langfuse.com/integrations/native/opentelemetry, and public API, https://api.reference.langfuse.com;
a real server cannot run offline).

It enforces the wire contract of ``POST /api/public/otel/v1/traces`` as implemented upstream in
``web/src/pages/api/public/otel/v1/traces/index.ts`` (check order: method → auth → ingestion suspended → body →
gunzip → content type → parse → empty → span-id validation → ``x-langfuse-ingestion-version``), records every
accepted span **including duplicates**, and can inject faults (status codes, 429 with rate-limit headers, delays,
connection resets before/after reading the body, full outage with restart on the same port).

What Langfuse would *store* from the recorded spans is computed by :func:`langfuse_view` (``langfuse_oracle.py``).

Times are unix **nanoseconds** (``*_ns``) unless named otherwise; delays and durations are **seconds**.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.fakes import langfuse_rest
from tests.fakes.langfuse_oracle import (
    LangfuseView,
    ReceivedSpan,
    SpanEvent,
    _build_spans,
    _json_shape,
    _proto_as_json_shape,
    _Reject,
    _validate,
    langfuse_view,
    spans_from_json,
    spans_from_proto,
)
from tests.fakes.loopback import LoopbackServer, ThreadedServer

__all__ = [
    "FakeLangfuse",
    "ThreadedFakeLangfuse",
    "Fault",
    "ReceivedSpan",
    "SpanEvent",
    "ReceivedRequest",
    "spans_from_proto",
    "spans_from_json",
    "langfuse_view",
    "LangfuseView",
    "TRACES_PATH",
]

TRACES_PATH = "/api/public/otel/v1/traces"
METRICS_PATH = "/api/public/otel/v1/metrics"
OBSERVATIONS_PATH = "/api/public/v2/observations"
SUSPENDED_MESSAGE = "Ingestion suspended: Usage threshold exceeded. Please upgrade your plan."


# ----------------------------------------------------------------------------------------------------------- records
@dataclass
class ReceivedRequest:
    """One HTTP request that reached the fake (any route), in arrival order.

    ``status`` is what was answered (None when the connection was reset instead); ``accepted`` is True when the
    spans of the request were recorded (a reset-after-read request is accepted *and* unanswered). ``headers`` has
    lower-cased names; ``raw_size`` is the body size on the wire, ``body_size`` after gunzip (bytes).
    """

    index: int
    method: str
    path: str
    headers: dict[str, str]
    project: str | None = None
    public_key: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    ingestion_version: str | None = None
    raw_size: int = 0
    body_size: int = 0
    span_count: int = 0
    status: int | None = None
    response: Any = None
    accepted: bool = False
    fault: str | None = None
    received_at: float = field(default_factory=time.time)
    #: unix seconds when the answer was decided (None until then): ``received_at``…``answered_at`` is the time the
    #: request was in flight at the server (tests measure clients' concurrency with it)
    answered_at: float | None = None


@dataclass
class Fault:
    """A programmed misbehaviour, matched against (path, project) of incoming requests in creation order.

    ``kind``: ``status`` (answer ``status``/``body``/``headers`` without reading the body), ``delay`` (sleep
    ``delay`` s — after recording unless ``before``), ``reset`` (close the connection without an answer — after
    recording the spans when ``after_read``). ``times`` = requests left (None: unlimited); ``until`` = monotonic
    deadline (None: none). ``project`` (id or public key) and ``path`` (None: any) scope the fault.
    ``hits`` counts the requests it applied to. ``shape`` scopes a fault of ``POST /scores`` to single-score
    (``object``) or batch (``array``) bodies.
    """

    kind: str
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    before: bool = False
    after_read: bool = True
    times: int | None = 1
    until: float | None = None
    project: str | None = None
    path: str | None = TRACES_PATH
    #: ``POST /scores`` only: apply to JSON ``"object"`` (one score) or ``"array"`` (the batch form) bodies; None: any
    shape: str | None = None
    hits: int = 0


_INVALID = object()  # a body that is not JSON


@dataclass(frozen=True)
class _Project:
    public_key: str
    secret_key: str
    id: str
    name: str


def _parse_iso_ns(v: str) -> int:
    """ISO 8601 (``2026-12-06T16:00:00.123Z``) → Unix ns; ``ValueError`` when unparseable."""
    from datetime import datetime

    dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return int(dt.timestamp() * 1_000_000) * 1000


def _js_parse_int(v: str) -> int | None:
    m = re.match(r"\s*([+-]?\d+)", v)
    return int(m.group(1)) if m else None


def _js_date_string(epoch: float) -> str:
    """``new Date(x).toString()`` in UTC, the format upstream puts in ``X-RateLimit-Reset`` (not epoch seconds)."""
    return time.strftime("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)", time.gmtime(epoch))


def _default_fault_body(status: int) -> Any:
    """Body Langfuse (or the proxy in front of it) sends with ``status``: JSON ``{message, error}`` or HTML."""
    if status in (502, 504):  # usually produced by a reverse proxy: HTML, not JSON
        text = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}[status]
        return f"<html><head><title>{text}</title></head><body><h1>{text}</h1></body></html>"
    messages = {
        401: ("Invalid credentials. Confirm that you've configured the correct host.", "UnauthorizedError"),
        403: (SUSPENDED_MESSAGE, "ForbiddenError"),
        429: ("Rate limit exceeded", "TooManyRequests"),
        500: ("Internal Server Error", "InternalServerError"),
        503: ("Service Unavailable", "ServiceUnavailable"),
    }
    msg, err = messages.get(status, (f"HTTP {status}", "Error"))
    return {"message": msg, "error": err}


# ----------------------------------------------------------------------------------------------------------- server
class FakeLangfuse(LoopbackServer):
    """Loopback fake Langfuse server (aiohttp, 127.0.0.1, random port) — OTLP endpoint and public API.

    ``projects`` maps public key → ``(secret_key, project_id)`` or ``(secret_key, project_id, project_name)``;
    ``org_keys`` maps public key → secret key of organisation keys (403 on project routes). ``version`` is what
    ``GET /api/public/health`` reports. Use ``async with FakeLangfuse(...) as lf`` or ``await lf.start()`` /
    ``await lf.stop()``, or :meth:`run_in_thread` for a server on its own loop/thread. All recording and fault
    methods are thread-safe.
    """

    def __init__(
        self,
        projects: dict[str, tuple[str, ...]] | None = None,
        *,
        org_keys: dict[str, str] | None = None,
        version: str = "4.16.0",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        projects = projects or {"pk-lf-test": ("sk-lf-test", "project-test")}
        self._projects = {pk: _Project(pk, v[0], v[1], v[2] if len(v) > 2 else v[1]) for pk, v in projects.items()}
        self._org_keys = dict(org_keys or {})
        self.version, self.host, self.port = version, host, port
        self._lock = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._spans: list[ReceivedSpan] = []
        self._scores: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        #: accept the array form of ``POST /scores`` (202/207) like newer servers (``langfuse_rest``)
        self.score_batches = False
        self.rest = langfuse_rest.RestState()
        #: the restart of a timed :meth:`outage` (held so it is not collected, and so tests can await it)
        self._restoring: asyncio.Task[None] | None = None

    # -- lifecycle
    @property
    def traces_url(self) -> str:
        """Full URL of the OTLP/HTTP traces endpoint."""
        return self.base_url + TRACES_PATH

    #: upstream has no hard body limit; bodies are read raw (the fake decompresses as Langfuse does)
    runner_options = {"auto_decompress": False, "access_log": None, "shutdown_timeout": 0.5}

    def make_app(self) -> web.Application:
        """Langfuse's OTLP, health, projects, scores and legacy ingestion routes."""
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", TRACES_PATH, self._traces)
        app.router.add_route("*", METRICS_PATH, self._metrics)
        app.router.add_route("GET", "/api/public/health", self._health)
        app.router.add_route("GET", "/api/public/ready", self._health)
        app.router.add_route("GET", "/api/public/projects", self._projects_route)
        app.router.add_route("GET", OBSERVATIONS_PATH, self._observations_route)
        app.router.add_route("POST", "/api/public/scores", self._scores_route)
        app.router.add_route("POST", "/api/public/ingestion", self._ingestion)
        langfuse_rest.install(self, app)
        return app

    async def outage(self, duration: float | None = None) -> None:
        """Stop listening (connections are refused, open ones closed); after ``duration`` s restart on the same port."""
        await self.stop()
        if duration is not None:
            self._restoring = asyncio.get_running_loop().create_task(self._restore_after(duration))

    async def _restore_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.restore()

    async def restored(self, timeout: float = 10.0) -> None:
        """Wait until a timed outage's restart has happened (its error, if it failed, is raised here)."""
        if self._restoring is not None:
            await asyncio.wait_for(asyncio.shield(self._restoring), timeout)

    @classmethod
    def run_in_thread(cls, *args: Any, **kwargs: Any) -> ThreadedFakeLangfuse:
        """Start a fake on its own event loop in a daemon thread (for subprocess / OTel SDK tests)."""
        return ThreadedFakeLangfuse(cls(*args, **kwargs))

    # -- recorded data
    def _match(self, project: str | None, rec_project: str | None, rec_pk: str | None) -> bool:
        return project is None or project in (rec_project, rec_pk)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request that reached the server (any route, incl. rejected/faulted), in arrival order."""
        with self._lock:
            return list(self._requests)

    def accepted_requests(self, project: str | None = None) -> list[ReceivedRequest]:
        """Trace-export requests whose spans were recorded (incl. reset-after-read ones)."""
        return [r for r in self.requests if r.accepted and self._match(project, r.project, r.public_key)]

    def spans(self, project: str | None = None) -> list[ReceivedSpan]:
        """Every accepted span in arrival order, **duplicates included**; ``project`` = id or public key."""
        with self._lock:
            return [s for s in self._spans if self._match(project, s.project, s.public_key)]

    def duplicate_span_ids(self, project: str | None = None) -> dict[str, int]:
        """``{span_id: times_received}`` for span ids received more than once (v4 stores each copy)."""
        counts: dict[str, int] = {}
        for s in self.spans(project):
            counts[s.span_id] = counts.get(s.span_id, 0) + 1
        return {k: n for k, n in counts.items() if n > 1}

    def scores(self, project: str | None = None) -> list[dict[str, Any]]:
        """Accepted ``POST /api/public/scores`` bodies (each with ``id`` and ``projectId`` filled in)."""
        with self._lock:
            return [s for s in self._scores if project is None or project in (s["projectId"], s["_publicKey"])]

    def stored_scores(self, project: str | None = None) -> dict[str, dict[str, Any]]:
        """What Langfuse keeps: the last accepted body per score ``id`` (``id`` is the upsert key)."""
        return {s["id"]: s for s in self.scores(project)}

    def view(self, project: str | None = None) -> LangfuseView:
        """:func:`langfuse_view` of :meth:`spans` — what Langfuse would store."""
        return langfuse_view(self.spans(project))

    def clear(self) -> None:
        """Forget recorded requests, spans and scores (faults stay)."""
        with self._lock:
            self._requests.clear(), self._spans.clear(), self._scores.clear()

    def wait_for_spans_sync(self, n: int, timeout: float = 5.0, project: str | None = None) -> list[ReceivedSpan]:
        """Block until at least ``n`` spans were recorded (``TimeoutError`` otherwise); safe from any thread."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(spans := [s for s in self._spans if self._match(project, s.project, s.public_key)]) < n:
                if not self._lock.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() >= deadline:
                    raise TimeoutError(f"{len(spans)} of {n} spans after {timeout}s")
            return spans

    async def wait_for_spans(self, n: int, timeout: float = 5.0, project: str | None = None) -> list[ReceivedSpan]:
        """Async variant of :meth:`wait_for_spans_sync` (polls every 10 ms)."""
        deadline = time.monotonic() + timeout
        while len(spans := self.spans(project)) < n:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(spans)} of {n} spans after {timeout}s")
            await asyncio.sleep(0.01)
        return spans

    # -- faults
    def add_fault(self, fault: Fault, duration: float | None = None) -> Fault:
        """Install ``fault`` (active for ``duration`` s if given) and return it."""
        if duration is not None:
            fault.until = time.monotonic() + duration
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(
        self,
        status: int,
        times: int | None = 1,
        *,
        duration: float | None = None,
        project: str | None = None,
        path: str | None = TRACES_PATH,
        body: Any = None,
        headers: dict[str, str] | None = None,
        shape: str | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching requests (None: until cleared/expired) with ``status`` (``shape``: see
        :class:`Fault`).

        Default bodies: JSON ``{message, error}``; 502/504 get an HTML page like a reverse proxy would send.
        """
        fault = Fault(
            "status",
            status=status,
            body=body,
            headers=dict(headers or {}),
            times=times,
            project=project,
            path=path,
            shape=shape,
        )
        return self.add_fault(fault, duration)

    def rate_limit(
        self,
        retry_after: int = 1,
        times: int | None = 1,
        *,
        limit: int = 1000,
        duration: float | None = None,
        project: str | None = None,
    ) -> Fault:
        """429 like Langfuse Cloud: ``Retry-After`` (integer s), ``X-RateLimit-Limit/Remaining`` and
        ``X-RateLimit-Reset`` as a JavaScript ``Date.toString()`` (upstream ``RateLimitService.ts``)."""
        headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": _js_date_string(time.time() + retry_after),
        }
        return self.fail(429, times, duration=duration, project=project, headers=headers)

    def suspend_ingestion(
        self, times: int | None = None, *, duration: float | None = None, project: str | None = None
    ) -> Fault:
        """403 ``Ingestion suspended: Usage threshold exceeded…`` (default: until cleared)."""
        return self.fail(403, times, duration=duration, project=project)

    def slow(
        self,
        delay: float,
        times: int | None = 1,
        *,
        before: bool = False,
        duration: float | None = None,
        project: str | None = None,
        path: str | None = TRACES_PATH,
    ) -> Fault:
        """Delay the answer by ``delay`` s. By default the spans are recorded *first* (a client timeout then
        leaves them stored, as on v4); with ``before=True`` the delay precedes reading the body."""
        return self.add_fault(
            Fault("delay", delay=delay, before=before, times=times, project=project, path=path), duration
        )

    def reset_connection(
        self,
        times: int | None = 1,
        *,
        after_read: bool = True,
        duration: float | None = None,
        project: str | None = None,
        path: str | None = TRACES_PATH,
    ) -> Fault:
        """Close the connection without answering; with ``after_read`` (default) the spans are recorded first."""
        return self.add_fault(Fault("reset", after_read=after_read, times=times, project=project, path=path), duration)

    def clear_faults(self) -> None:
        """Remove every installed fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str, project: _Project | None, shape: str | None = None) -> Fault | None:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if (f.until is None or f.until > now) and f.times != 0]
            for f in self._faults:
                if f.path not in (None, path) or f.shape not in (None, shape):
                    continue
                if f.project is not None and (project is None or f.project not in (project.id, project.public_key)):
                    continue
                f.hits += 1
                if f.times is not None:
                    f.times -= 1
                return f
        return None

    # -- helpers
    def _record(
        self, rec: ReceivedRequest, status: int | None, response: Any, spans: list[ReceivedSpan] | None = None
    ) -> None:
        rec.status, rec.response, rec.answered_at = status, response, time.time()
        with self._lock:
            rec.index = len(self._requests)
            if spans is not None:
                rec.accepted, rec.span_count = True, len(spans)
                self._spans.extend(ReceivedSpan(**{**s.__dict__, "request_index": rec.index}) for s in spans)
            self._requests.append(rec)
            self._lock.notify_all()

    def _reply(
        self,
        rec: ReceivedRequest,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        spans: list[ReceivedSpan] | None = None,
    ) -> web.Response:
        self._record(rec, status, body, spans)
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html", headers=headers)
        return web.json_response(body, status=status, headers=headers)

    def _authenticate(self, request: web.Request, route: str = "") -> tuple[_Project | None, tuple | None]:
        """Returns (project, None) or (None, (status, body)) following upstream ``ApiAuthService``."""
        header = request.headers.get("Authorization", "")
        if not header:
            return None, (401, {"message": "No authorization header", "error": "UnauthorizedError"})
        scheme, _, cred = header.partition(" ")
        pk = sk = None
        if scheme.lower() == "basic":
            try:
                pk, _, sk = base64.b64decode(cred.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        elif scheme.lower() == "bearer" and route == "scores":
            pk = cred.strip()
            sk = self._projects[pk].secret_key if pk in self._projects else None
        if pk in self._projects and sk == self._projects[pk].secret_key:
            return self._projects[pk], None
        if pk in self._org_keys and sk == self._org_keys[pk]:
            prefix = "Invalid API key." if route == "projects" else "Missing projectId in scope."
            return None, (403, {"message": f"{prefix} Are you using an organization key?", "error": "ForbiddenError"})
        return None, (
            401,
            {
                "message": "Invalid credentials. Confirm that you've configured the correct host.",
                "error": "UnauthorizedError",
            },
        )

    def _new_rec(self, request: web.Request) -> ReceivedRequest:
        h = {k.lower(): v for k, v in request.headers.items()}
        return ReceivedRequest(
            index=-1,
            method=request.method,
            path=request.path,
            headers=h,
            content_type=h.get("content-type"),
            content_encoding=h.get("content-encoding"),
            ingestion_version=h.get("x-langfuse-ingestion-version", h.get("x_langfuse_ingestion_version")),
        )

    async def _guard(
        self, request: web.Request, rec: ReceivedRequest, route: str = "", auth: bool = True, shape: str | None = None
    ) -> tuple[_Project | None, Fault | None, web.StreamResponse | None]:
        """Auth + fault pre-phase shared by every route: returns (project, fault, early response or None)."""
        project = None
        if auth:
            project, err = self._authenticate(request, route)
            if err:
                return None, None, self._reply(rec, *err)
            rec.project, rec.public_key = project.id, project.public_key
        fault = self._take_fault(request.path, project, shape)
        if fault is None:
            return project, None, None
        rec.fault = fault.kind if fault.kind != "status" else str(fault.status)
        if fault.kind == "status":
            body = fault.body if fault.body is not None else _default_fault_body(fault.status or 500)
            return project, fault, self._reply(rec, fault.status or 500, body, fault.headers)
        if fault.kind == "delay" and fault.before:
            await asyncio.sleep(fault.delay)
        if fault.kind == "reset" and not fault.after_read:
            return project, fault, self._abort(request, rec)
        return project, fault, None

    def _abort(
        self, request: web.Request, rec: ReceivedRequest, spans: list[ReceivedSpan] | None = None
    ) -> web.StreamResponse:
        self._record(rec, None, None, spans)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp drops the handler quietly; nothing is written

    async def _finish(
        self,
        request: web.Request,
        rec: ReceivedRequest,
        fault: Fault | None,
        status: int,
        body: Any,
        spans: list[ReceivedSpan] | None = None,
    ) -> web.StreamResponse:
        if fault is not None and fault.kind == "reset":
            return self._abort(request, rec, spans)
        if fault is not None and fault.kind == "delay" and not fault.before:
            self._record(rec, None, None, spans)  # spans are stored before the slow answer (upstream: blob upload)
            await asyncio.sleep(fault.delay)
            rec.status, rec.response = status, body
            return web.json_response(body, status=status)
        return self._reply(rec, status, body, spans=spans)

    # -- routes
    async def _traces(self, request: web.Request) -> web.StreamResponse:
        """``/api/public/otel/v1/traces`` — upstream check order."""
        rec = self._new_rec(request)
        if request.method != "POST":
            return self._reply(rec, 405, {"message": "Method not allowed", "error": "MethodNotAllowedError"})
        project, fault, early = await self._guard(request, rec)
        if early is not None:
            return early
        body = await request.read()
        rec.raw_size = len(body)
        try:
            if "gzip" in (rec.content_encoding or ""):
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError, zlib.error):
                    raise _Reject("Failed to decompress request body") from None
            rec.body_size = len(body)
            ctype = (rec.content_type or "").lower()
            if "application/json" not in ctype and "application/x-protobuf" not in ctype:
                raise _Reject("Invalid content type")
            extra = {"project": project.id, "public_key": project.public_key}
            if "application/x-protobuf" in ctype:
                try:
                    shape, from_json = _proto_as_json_shape(ExportTraceServiceRequest.FromString(body)), False
                except DecodeError:
                    raise _Reject("Failed to parse OTel Protobuf Trace") from None
            if "application/json" in ctype:
                try:
                    doc = json.loads(body)
                    if doc is None:
                        raise ValueError
                    shape, from_json = _json_shape(doc), True
                except ValueError:
                    raise _Reject("Failed to parse OTel JSON Trace") from None
            if not shape:
                return await self._finish(request, rec, fault, 200, {}, spans=[])
            _validate(shape, from_json)
            version = rec.ingestion_version
            if version and (_js_parse_int(version) is None or _js_parse_int(version) > 4):
                raise _Reject(f'Unsupported x-langfuse-ingestion-version: "{version}". Maximum supported: "4".')
            spans = _build_spans(shape, from_json, **extra)
        except _Reject as e:
            return self._reply(rec, 400, {"error": str(e)})
        job = {"id": str(uuid.uuid4()), "name": "OtelIngestionJob", "timestamp": int(time.time() * 1000)}
        return await self._finish(request, rec, fault, 200, job, spans=spans)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """``/api/public/otel/v1/metrics`` — authenticated no-op (PR #6408): 200, nothing stored."""
        rec = self._new_rec(request)
        if request.method != "POST":
            return self._reply(rec, 405, {"message": "Method not allowed", "error": "MethodNotAllowedError"})
        _project, fault, early = await self._guard(request, rec)
        if early is not None:
            return early
        rec.raw_size = len(await request.read())
        return await self._finish(request, rec, fault, 200, {})

    async def _health(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/public/health`` (no auth) → ``{"status":"OK","version":…}`` (API reference)."""
        rec = self._new_rec(request)
        _p, fault, early = await self._guard(request, rec, auth=False)
        return early or await self._finish(request, rec, fault, 200, {"status": "OK", "version": self.version})

    async def _projects_route(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/public/projects`` with a project key → ``{data:[{id,name,organization,metadata}]}`` (API ref)."""
        rec = self._new_rec(request)
        project, fault, early = await self._guard(request, rec, route="projects")
        if early is not None:
            return early
        data = [
            {
                "id": project.id,
                "name": project.name,
                "organization": {"id": "org-fake", "name": "Fake Org"},
                "metadata": {},
            }
        ]
        return await self._finish(request, rec, fault, 200, {"data": data})

    async def _observations_route(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/public/v2/observations`` (Observations API v2, real time with ingestion version 4): the
        project's stored observations (one per received span copy: v4 does not de-duplicate) filtered by
        ``traceId`` and ``fromStartTime``/``toStartTime`` (ISO 8601, start inclusive, end exclusive), ``limit``
        (≤ 1000, default 50) per page, ``meta.cursor`` for the next page. Faults apply with ``path`` set to this
        route. https://langfuse.com/docs/api-and-data-platform/features/observations-api"""
        rec = self._new_rec(request)
        project, fault, early = await self._guard(request, rec)
        if early is not None:
            return early
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
            offset = int(q.get("cursor", "0") or 0)
            lo = _parse_iso_ns(q["fromStartTime"]) if "fromStartTime" in q else None
            hi = _parse_iso_ns(q["toStartTime"]) if "toStartTime" in q else None
        except ValueError as e:
            return self._reply(rec, 400, {"message": f"Invalid request data: {e}", "error": "InvalidRequestError"})
        if not 1 <= limit <= 1000:
            return self._reply(
                rec, 400, {"message": "limit must be between 1 and 1000", "error": "InvalidRequestError"}
            )
        rows = [
            sp
            for sp in self.spans(project.id)
            if (not q.get("traceId") or sp.trace_id == q["traceId"])
            and (lo is None or (sp.start_ns or 0) >= lo)
            and (hi is None or (sp.start_ns or 0) < hi)
        ]
        page = rows[offset : offset + limit]
        data = [
            {
                "id": sp.span_id,
                "traceId": sp.trace_id,
                "parentObservationId": sp.parent_span_id,
                "name": sp.name,
                "projectId": project.id,
            }
            for sp in page
        ]
        cursor = str(offset + limit) if offset + limit < len(rows) else None
        return await self._finish(request, rec, fault, 200, {"data": data, "meta": {"cursor": cursor}})

    async def _scores_route(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/public/scores`` — v4.16: one JSON object → 200 ``{"id"}``; arrays → 400 (API reference)."""
        rec = self._new_rec(request)
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = _INVALID
        shape = "array" if isinstance(body, list) else "object" if isinstance(body, dict) else None
        project, fault, early = await self._guard(request, rec, route="scores", shape=shape)
        if early is not None:
            return early
        if body is _INVALID:
            return self._reply(rec, 400, {"message": "Invalid JSON body", "error": "InvalidRequestError"})
        if isinstance(body, list) and self.score_batches:
            errors = [
                p for b in body if (p := _score_problem(b) or langfuse_rest.config_problem(self.rest, project.id, b))
            ]
            ok = [b for b in body if not (_score_problem(b) or langfuse_rest.config_problem(self.rest, project.id, b))]
            with self._lock:
                self._scores.extend(
                    {
                        **b,
                        "id": b.get("id") or str(uuid.uuid4()),
                        "projectId": project.id,
                        "_publicKey": project.public_key,
                    }
                    for b in ok
                )
            if errors:
                return await self._finish(
                    request,
                    rec,
                    fault,
                    207,
                    {"accepted": len(ok), "rejected": len(errors), "errors": [{"message": m} for m in errors]},
                )
            return await self._finish(request, rec, fault, 202, {"message": "Accepted"})
        problem = _score_problem(body) or langfuse_rest.config_problem(self.rest, project.id, body)
        if problem:
            return self._reply(
                rec, 400, {"message": f"Invalid request data: {problem}", "error": "InvalidRequestError"}
            )
        score = {
            **body,
            "id": body.get("id") or str(uuid.uuid4()),
            "projectId": project.id,
            "_publicKey": project.public_key,
        }
        with self._lock:
            self._scores.append(score)
        return await self._finish(request, rec, fault, 200, {"id": score["id"]})

    async def _ingestion(self, request: web.Request) -> web.StreamResponse:
        """Legacy ``POST /api/public/ingestion`` in v4 ``events_only`` mode: 207, only score-create/sdk-log pass."""
        rec = self._new_rec(request)
        _project, fault, early = await self._guard(request, rec)
        if early is not None:
            return early
        try:
            batch = json.loads(await request.read()).get("batch") or []
        except (ValueError, AttributeError):
            return self._reply(rec, 400, {"message": "Invalid request data", "error": "InvalidRequestError"})
        ok = [{"id": e.get("id"), "status": 201} for e in batch if e.get("type") in ("score-create", "sdk-log")]
        bad = [
            {"id": e.get("id"), "status": 400, "message": "Legacy ingestion is not supported in events_only mode"}
            for e in batch
            if e.get("type") not in ("score-create", "sdk-log")
        ]
        return await self._finish(request, rec, fault, 207, {"successes": ok, "errors": bad})


def _score_problem(body: Any) -> str | None:
    """Loose ``POST /scores`` validation (https://api.reference.langfuse.com); returns a message or None."""
    if not isinstance(body, dict):
        return "expected a single score object (this server version rejects batches)"
    if not isinstance(body.get("name"), str) or not body["name"]:
        return "name is required"
    value, dtype = body.get("value"), body.get("dataType")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return "value must be a number or a string"
    if not any(body.get(k) for k in ("traceId", "observationId", "sessionId", "datasetRunId")):
        return "one of traceId, observationId, sessionId or datasetRunId is required"
    if body.get("source") == "EVAL":
        return "source EVAL is not allowed via the API"
    if dtype is None:
        return None
    if dtype == "NUMERIC":
        return None if isinstance(value, (int, float)) else "NUMERIC scores need a numeric value"
    if dtype == "BOOLEAN":
        return None if isinstance(value, (int, float)) and value in (0, 1) else "BOOLEAN scores need value 0 or 1"
    if dtype in ("CATEGORICAL", "CORRECTION"):
        return None if isinstance(value, str) else f"{dtype} scores need a string value"
    if dtype == "TEXT":
        return None if isinstance(value, str) and 1 <= len(value) <= 500 else "TEXT scores need 1-500 characters"
    return f"unknown dataType {dtype!r}"


class ThreadedFakeLangfuse(ThreadedServer):
    """A :class:`FakeLangfuse` serving from its own event loop in a daemon thread (see ``ThreadedServer``), plus a
    blocking ``wait_for_spans(n, timeout)``."""

    def __init__(self, fake: FakeLangfuse) -> None:
        super().__init__(fake, "fake-langfuse")

    def wait_for_spans(self, n: int, timeout: float = 5.0, project: str | None = None) -> list[ReceivedSpan]:
        """Block until ``n`` spans were recorded (see :meth:`FakeLangfuse.wait_for_spans_sync`)."""
        return self.fake.wait_for_spans_sync(n, timeout, project)
