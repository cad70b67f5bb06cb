"""relay as a drop-in Langfuse host: the Langfuse public REST API (``/api/public/*``) served on the OTLP/HTTP
receiver's port, so apps using the Langfuse SDKs can set ``LANGFUSE_BASE_URL`` to relay.

API reference: https://api.reference.langfuse.com (authentication: HTTP Basic with the project's public key as
user name and secret key as password).

- ``POST /api/public/otel/v1/traces``: relay's own OTLP receiver (not this module); other
  ``/api/public/otel/*``: 404 (Langfuse keeps traces only).
- ``GET /api/public/health`` and ``/ready`` (no auth): proxied to the caller's tenant's Langfuse, else the default
  tenant's.
- ``POST /api/public/scores`` — one object (→ 200 ``{"id"}``) or an array (→ 202 ``{"message":"Accepted"}``, or
  207 ``{accepted, rejected, errors}``): validated, stored durably (ledger score table + score outbox),
  acknowledged, then forwarded one by one.
- ``POST /api/public/ingestion`` (legacy batch): 207 ``{successes, errors}``; ``score-create`` items are stored and
  forwarded as scores, ``sdk-log`` items accepted and dropped, other items refused per item (send traces by OTLP).
- Anything else (projects, prompts, datasets, score configs, comments, annotation queues, v2 observations and
  metrics…): proxied to the tenant's Langfuse with the tenant's project keys; request and response bodies stream.

Caller authentication (always required except health): HTTP Basic with the tenant's Langfuse public and secret
key, or with the tenant's Langfuse public key (or any user name when the tenant has none) and a relay token of the
tenant as password; or ``Bearer <relay token>``. Secrets are compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from relay import __version__
from relay.config_security import TLSClientConfig
from relay.otlp.codec import CodecError, TooLarge, decompress
from relay.store.sqlite import SqliteDB
from relay.tls import client_ssl_context
from relay.usage.sqlite_scores import LedgerScore, put_scores

__all__ = ["LangfuseApiProxy", "score_problem"]

_R = TypeVar("_R", bound=web.StreamResponse)

log = logging.getLogger(__name__)

PREFIX = "/api/public"
#: Bodies relay stores itself (scores, legacy ingestion): Langfuse's own limit is ~4.5 MB for ingestion.
MAX_DURABLE_BODY = 5 * 1024 * 1024
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
        "content-length",
    }
)
_DATA_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT", "CORRECTION")


def _error(
    status: int, message: str, error: str = "InvalidRequestError", headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"message": message, "error": error}, status=status, headers=headers)


def score_problem(body: Any) -> str | None:
    """Why ``body`` is not a valid Langfuse score-create object, or None (https://api.reference.langfuse.com,
    ``POST /api/public/scores``: ``name`` required, ``value`` number or string, a subject, ``dataType`` rules)."""
    if not isinstance(body, dict):
        return "a score must be a JSON object"
    if not isinstance(body.get("name"), str) or not body["name"]:
        return "name is required"
    value, dtype = body.get("value"), body.get("dataType")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return "value must be a number or a string"
    if not any(body.get(k) for k in ("traceId", "observationId", "sessionId", "datasetRunId")):
        return "one of traceId, observationId, sessionId or datasetRunId is required"
    if body.get("id") is not None and not isinstance(body["id"], str):
        return "id must be a string"
    if body.get("source") == "EVAL":
        return "source EVAL is not allowed via the API"
    if dtype is None:
        return None
    if dtype not in _DATA_TYPES:
        return f"unknown dataType {dtype!r}"
    if dtype == "NUMERIC" and not isinstance(value, (int, float)):
        return "NUMERIC scores need a numeric value"
    if dtype == "BOOLEAN" and not (isinstance(value, (int, float)) and value in (0, 1)):
        return "BOOLEAN scores need value 0 or 1"
    if dtype in ("CATEGORICAL", "CORRECTION", "TEXT") and not isinstance(value, str):
        return f"{dtype} scores need a string value"
    if dtype == "TEXT" and isinstance(value, str) and not 1 <= len(value) <= 500:
        return "TEXT scores need 1-500 characters"
    return None


class _Tenant:
    def __init__(self, name: str, langfuse: Any, tokens: list[bytes]):
        self.name = name
        self.base_url = str(langfuse.base_url).rstrip("/") if langfuse.enabled else None
        self.pk = langfuse.public_key.get_secret_value().encode() if langfuse.public_key else None
        self.sk = langfuse.secret_key.get_secret_value().encode() if langfuse.secret_key else None
        self.tokens = tokens
        self.auth = langfuse.authorization() if langfuse.enabled else None


class LangfuseApiProxy:
    """The ``/api/public/*`` routes. ``tenants``: resolved tenant configs (``name``, ``langfuse``, ``tokens``);
    ``default_tenant``: whose Langfuse answers unauthenticated health checks; ``db``: relay's database (scores are
    stored with ``relay.usage.sqlite_scores.put_scores``); ``on_queued(tenants)`` wakes the score sender;
    ``on_changes`` gets the changed score rows (the rules engine's feed); ``tls``: the outbound TLS to Langfuse
    (``exporters.langfuse.tls``, as the exporter's).
    :meth:`install` adds the routes to the OTLP/HTTP receiver's application (after its own routes)."""

    def __init__(
        self,
        tenants: list,
        default_tenant: str,
        db: SqliteDB,
        *,
        on_queued: Callable[[set[str]], None] | None = None,
        timeout: float = 60.0,
        registry: CollectorRegistry | None = None,
        is_stopping: Callable[[], bool] = lambda: False,
        on_changes: Callable[[list], None] | None = None,
        tls: TLSClientConfig | None = None,
    ):
        self.tenants = [
            _Tenant(t.name, t.langfuse, [tok.get_secret_value().encode() for tok in t.tokens]) for t in tenants
        ]
        self.default = next((t for t in self.tenants if t.name == default_tenant), None) or next(
            (t for t in self.tenants if t.base_url), None
        )
        self.db = db
        self.on_queued = on_queued
        self.on_changes = on_changes
        self.timeout = timeout
        self.is_stopping = is_stopping
        self.tls = tls or TLSClientConfig()
        self._http: aiohttp.ClientSession | None = None
        self.requests = Counter(
            "relay_langfuse_api_requests",
            "Langfuse public API requests served by relay, by handling (proxied, stored, refused) and status.",
            ["handling", "status"],
            registry=registry,
        )

    def install(self, app: web.Application) -> None:
        """Add the catch-all ``/api/public/{path}`` route (any method) and the HTTP client's lifecycle to ``app``."""
        app.router.add_route("*", PREFIX + "/{path:.*}", self.handle)
        app.on_cleanup.append(self._close)

    async def _close(self, _app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.timeout),
                connector=aiohttp.TCPConnector(ssl=client_ssl_context(self.tls)),
            )
        return self._http

    # ------------------------------------------------------------------ auth

    def authenticate(self, header: str | None) -> _Tenant | None:
        """The tenant the ``Authorization`` header belongs to, or None (see the module docstring)."""
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        found = None
        if scheme == "bearer" and value:
            token = value.encode()
            for t in self.tenants:
                for tok in t.tokens:
                    if hmac.compare_digest(tok, token) and found is None:
                        found = t
            return found
        if scheme != "basic" or not value:
            return None
        try:
            user, sep, password = base64.b64decode(value, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        if not sep:
            return None
        for t in self.tenants:
            keys = (
                t.pk is not None
                and t.sk is not None
                and bool(hmac.compare_digest(t.pk, user) & hmac.compare_digest(t.sk, password))
            )
            by_token = any([hmac.compare_digest(tok, password) for tok in t.tokens]) and (
                t.pk is None or hmac.compare_digest(t.pk, user)
            )
            if (keys or by_token) and found is None:
                found = t
        return found

    # ------------------------------------------------------------------ routing

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one ``/api/public/*`` request (see the module docstring for the table)."""
        path = request.match_info["path"].strip("/")
        if path.startswith("otel/") or path == "otel":
            return self._count(
                "refused",
                _error(
                    404, "Langfuse stores traces only: send OTLP traces to /api/public/otel/v1/traces", "NotFoundError"
                ),
            )
        tenant = self.authenticate(request.headers.get("Authorization"))
        if path in ("health", "ready") and request.method == "GET":
            target = tenant or self.default
            if target is None or target.base_url is None:
                return self._count("local", web.json_response({"status": "OK", "version": __version__}))
            return await self._proxy(request, target, authorize=False)
        if tenant is None:
            return self._count(
                "refused",
                _error(
                    401,
                    "Invalid credentials: use the tenant's Langfuse public and secret key (Basic auth), or its "
                    "public key and a relay token",
                    "UnauthorizedError",
                ),
            )
        if request.method == "POST" and path == "scores":
            return await self._scores(request, tenant)
        if request.method == "POST" and path == "ingestion":
            return await self._ingestion(request, tenant)
        if tenant.base_url is None:
            return self._count(
                "refused",
                _error(
                    503, f"tenant {tenant.name!r} has no Langfuse project configured in relay", "ServiceUnavailable"
                ),
            )
        return await self._proxy(request, tenant)

    def _count(self, handling: str, resp: _R) -> _R:
        self.requests.labels(handling, str(resp.status)).inc()
        return resp

    # ------------------------------------------------------------------ proxy

    async def _proxy(self, request: web.Request, tenant: _Tenant, *, authorize: bool = True) -> web.StreamResponse:
        """Forward the request to the tenant's Langfuse, streaming both bodies."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if authorize and tenant.auth:
            headers["Authorization"] = tenant.auth
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        has_body = request.body_exists
        assert tenant.base_url is not None  # checked by the caller
        # the raw (still percent-encoded) path: a prompt named ``team/greeting`` travels as ``team%2Fgreeting``
        url = URL(tenant.base_url + request.rel_url.raw_path_qs, encoded=True)
        try:
            async with self._client().request(
                request.method, url, headers=headers, data=request.content if has_body else None, allow_redirects=False
            ) as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in _HOP or k.lower() == "content-length":
                        resp.headers.add(k, v)
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                self.requests.labels("proxied", str(up.status)).inc()
                return resp
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning(
                "Langfuse API proxy for tenant %s: %s %s failed: %s",
                tenant.name,
                request.method,
                request.rel_url.path,
                type(e).__name__,
            )
            return self._count(
                "refused", _error(502, f"Langfuse is unreachable from relay: {type(e).__name__}", "BadGateway")
            )

    # ------------------------------------------------------------------ durable writes

    async def _read_json(self, request: web.Request) -> Any:
        length = request.content_length
        if length is not None and length > MAX_DURABLE_BODY:
            raise TooLarge(f"request body of {length} bytes is over the limit of {MAX_DURABLE_BODY} bytes")
        buf = bytearray()
        while chunk := await request.content.readany():
            buf += chunk
            if len(buf) > MAX_DURABLE_BODY:
                raise TooLarge(f"request body is over the limit of {MAX_DURABLE_BODY} bytes")
        raw = decompress(bytes(buf), request.headers.get("Content-Encoding"), MAX_DURABLE_BODY)
        return json.loads(raw)

    async def _body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        try:
            return await self._read_json(request), None
        except TooLarge as e:
            return None, self._count("refused", _error(413, e.message, "PayloadTooLarge"))
        except (CodecError, ValueError) as e:
            return None, self._count("refused", _error(400, f"Invalid request data: not JSON ({e})"[:300]))
        except (ConnectionError, RequestPayloadError) as e:
            return None, self._count("refused", _error(400, f"incomplete request body: {e}"))

    async def _store(self, tenant: _Tenant, bodies: list[dict[str, Any]]) -> web.Response | None:
        """Durably store app scores; None when stored, else the 503 to answer."""
        if self.is_stopping():
            return self._count(
                "refused", _error(503, "relay is shutting down; retry", "ServiceUnavailable", {"Retry-After": "1"})
            )
        now = time.time_ns()
        scores = [LedgerScore(tenant.name, b, "api", now, deliver=tenant.base_url is not None) for b in bodies]
        try:
            _queued, changes = await self.db.run(lambda c: put_scores(c, scores))
        except Exception as e:
            log.error("storing %d app scores for tenant %s failed: %s", len(scores), tenant.name, e)
            return self._count(
                "refused",
                _error(503, "relay cannot store scores now; retry", "ServiceUnavailable", {"Retry-After": "1"}),
            )
        if self.on_queued and tenant.base_url is not None:
            self.on_queued({tenant.name})
        if changes and self.on_changes is not None:
            try:
                self.on_changes(changes)
            except Exception:  # the rules engine must not fail the request
                log.exception("on_changes failed for %d app scores", len(changes))
        return None

    async def _scores(self, request: web.Request, tenant: _Tenant) -> web.Response:
        """``POST /api/public/scores``: one object → 200 ``{"id"}``; an array → 202 / 207."""
        body, err = await self._body(request)
        if err is not None:
            return err
        if isinstance(body, list):
            good, errors = [], []
            for item in body:
                problem = score_problem(item)
                if problem:
                    errors.append({"message": problem})
                else:
                    good.append({**item, "id": item.get("id") or str(uuid.uuid4())})
            if good and (err := await self._store(tenant, good)) is not None:
                return err
            if errors:
                log.info(
                    "tenant %s: %d of %d posted scores refused (%s)",
                    tenant.name,
                    len(errors),
                    len(body),
                    errors[0]["message"],
                )
                return self._count(
                    "stored",
                    web.json_response({"accepted": len(good), "rejected": len(errors), "errors": errors}, status=207),
                )
            return self._count("stored", web.json_response({"message": "Accepted"}, status=202))
        problem = score_problem(body)
        if problem:
            log.info("tenant %s: posted score refused: %s", tenant.name, problem)
            return self._count("refused", _error(400, f"Invalid request data: {problem}"))
        body = {**body, "id": body.get("id") or str(uuid.uuid4())}
        if (err := await self._store(tenant, [body])) is not None:
            return err
        return self._count("stored", web.json_response({"id": body["id"]}))

    async def _ingestion(self, request: web.Request, tenant: _Tenant) -> web.Response:
        """Legacy ``POST /api/public/ingestion``: 207 ``{successes, errors}`` per event (see module docstring)."""
        doc, err = await self._body(request)
        if err is not None:
            return err
        batch = doc.get("batch") if isinstance(doc, dict) else None
        if not isinstance(batch, list):
            return self._count("refused", _error(400, 'Invalid request data: expected {"batch": [...]}'))
        successes: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        scores: list[dict[str, Any]] = []
        for ev in batch:
            eid = ev.get("id") if isinstance(ev, dict) else None
            kind = ev.get("type") if isinstance(ev, dict) else None
            if kind == "score-create":
                body = ev.get("body")
                problem = score_problem(body)
                if problem:
                    errors.append(
                        {
                            "id": eid,
                            "status": 400,
                            "message": f"Invalid request data: {problem}",
                            "error": "InvalidRequestError",
                        }
                    )
                    continue
                scores.append({**body, "id": body.get("id") or eid or str(uuid.uuid4())})
                successes.append({"id": eid, "status": 201})
            elif kind == "sdk-log":
                successes.append({"id": eid, "status": 201})
            else:
                errors.append(
                    {
                        "id": eid,
                        "status": 400,
                        "error": "InvalidRequestError",
                        "message": f"relay does not take {kind!r} events on the legacy ingestion API; send "
                        "traces by OTLP to /api/public/otel/v1/traces",
                    }
                )
        if scores and (err := await self._store(tenant, scores)) is not None:
            return err
        if errors:
            log.info(
                "tenant %s: %d of %d legacy ingestion events refused (%s)",
                tenant.name,
                len(errors),
                len(batch),
                errors[0]["message"][:120],
            )
        return self._count("stored", web.json_response({"successes": successes, "errors": errors}, status=207))
