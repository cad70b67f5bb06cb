"""Guards of the admin HTTP endpoint (``service.admin``): bearer token, ``Host`` check (DNS rebinding), JSON-only
mutations and a foreign-``Origin`` check (CSRF), as one aiohttp middleware.

Rules, in order, for every request:

1. ``/healthz`` and ``/readyz`` are always served (probes send the pod IP as ``Host`` and no token); ``/readyz``
   shows details (tenant names, exporter errors) only to an authenticated caller (:func:`is_authenticated`).
2. ``Host`` must be ``localhost``, an IP address literal (what Prometheus and Kubernetes send; a rebinding page
   can only send a *name*) or one of ``service.admin.allowed_hosts``; otherwise **421 Misdirected Request** — a
   page on a rebinding domain (``evil.example`` resolving to 127.0.0.1) sends its own name
   (https://www.rfc-editor.org/rfc/rfc9110#section-15.5.20).
3. An ``Origin`` header (sent by browsers on cross-site requests) whose host is not acceptable by rule 2 → **403**.
4. ``service.admin.auth.token`` set: every other endpoint (``/metrics`` only with ``metrics_auth: true``) needs
   ``Authorization: Bearer <token>`` → **401** with ``WWW-Authenticate: Bearer`` otherwise.
5. ``POST``/``PUT``/``PATCH``/``DELETE`` with a body whose ``Content-Type`` is not ``application/json`` → **415**:
   a browser can only send "simple" cross-site requests with ``text/plain``, form or multipart bodies
   (https://fetch.spec.whatwg.org/#cors-safelisted-request-header). Body-less calls (``POST /-/reload``,
   ``DELETE /api/v2/silence/{id}``) are not checked (they carry no data; cross-site ones fail rule 3).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from relay.config import AdminConfig
from relay.config_security import is_loopback_host

__all__ = ["admin_middleware", "is_authenticated", "PUBLIC_PATHS", "AUTHENTICATED"]

#: Endpoints served without token or Host check.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
#: Request key set to True when the caller presented the admin token (or none is configured).
AUTHENTICATED = web.RequestKey("relay_admin_authenticated", bool)
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host_only(value: str) -> str:
    """The host part of a ``Host`` header value (``name:port``, ``[v6]:port``), lower-case."""
    v = value.strip().lower()
    if v.startswith("["):
        return v[1 : v.find("]")] if "]" in v else v
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def admin_middleware(config: AdminConfig) -> Callable:
    """The aiohttp middleware enforcing the rules of this module for ``config`` (``service.admin``)."""
    token = config.auth.token.get_secret_value().encode() if config.auth.token else None
    allowed = {h.strip().lower() for h in config.allowed_hosts}

    def host_ok(host: str) -> bool:
        return is_loopback_host(host) or host in allowed or _is_ip(host)

    def authenticated(request: web.Request) -> bool:
        if token is None:
            return True
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        request[AUTHENTICATED] = authenticated(request)
        if path in PUBLIC_PATHS:
            return await handler(request)
        if not host_ok(_host_only(request.headers.get("Host", ""))):
            return web.json_response(
                {"error": "this Host is not served; add it to service.admin.allowed_hosts"}, status=421
            )
        origin = request.headers.get("Origin")
        if origin is not None and not host_ok((urlsplit(origin).hostname or "").lower()):
            return web.json_response({"error": "cross-origin requests are refused"}, status=403)
        needs_token = path != "/metrics" or config.metrics_auth
        if needs_token and not request[AUTHENTICATED]:
            return web.json_response(
                {"error": "missing or invalid admin token: send 'Authorization: Bearer <token>'"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="relay-admin"'},
            )
        if request.method in _MUTATING:
            ctype = request.headers.get("Content-Type")
            media = ctype.split(";", 1)[0].strip().lower() if ctype else None
            if media != "application/json" and request.body_exists:
                return web.json_response({"error": "send Content-Type: application/json"}, status=415)
        return await handler(request)

    return middleware


def is_authenticated(request: web.Request) -> bool:
    """True when the request carried the admin token (always True when no token is configured)."""
    return request.get(AUTHENTICATED, False)
