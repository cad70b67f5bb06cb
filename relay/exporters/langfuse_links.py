"""Links into the Langfuse UI for alerts and reports: a tenant's session and trace pages.

Langfuse's UI addresses objects per project: ``{base}/project/{projectId}/sessions/{sessionId}`` and
``{base}/project/{projectId}/traces/{traceId}``. A project key knows its project: ``GET /api/public/projects``
answers ``{data: [{id, name, …}]}`` (https://api.reference.langfuse.com). relay asks
once per tenant at start-up with aiohttp (Basic auth with the project keys, as the SDKs do), retrying while Langfuse
is unreachable; until the answer arrives (or when export is off) links are simply left out — never guessed. Not with
the Langfuse SDK's REST client: importing it (with pydantic models, httpx and numpy) costs the daemon ~18 MiB of
memory and ~0.3 s of CPU for one GET.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from urllib.parse import quote

import aiohttp

from relay.component import Component
from relay.config import TenantConfig
from relay.config_security import TLSClientConfig
from relay.tls import client_ssl_context

__all__ = ["LangfuseLinks", "SETTLE_TIMEOUT"]

log = logging.getLogger(__name__)

#: Longest wait (s) of :meth:`LangfuseLinks.settled` for the first answers of the project lookups.
SETTLE_TIMEOUT = 10.0


class LangfuseLinks(Component):
    """Per-tenant Langfuse UI links. ``tenants`` are resolved tenant configs (``RelayConfig.resolved_tenants``).

    ``links(labels)`` is synchronous and cheap (the rules engine calls it when an alert changes): it reads the
    ``tenant``, ``session`` and ``trace`` labels/values and returns ``{"Langfuse session": url, "Langfuse trace":
    url}`` for what is known. ``tls`` is the exporter's outbound TLS (``exporters.langfuse.tls``: a private CA, a
    client certificate), used for the project lookup too.
    """

    name = "Langfuse links"

    def __init__(self, tenants: list[TenantConfig], tls: TLSClientConfig | None = None):
        self._tenants = {t.name: t for t in tenants}
        self._tls = tls or TLSClientConfig()
        self._projects: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._unsettled = {t.name for t in tenants if t.langfuse.enabled}  # first lookup not answered yet
        self._settled = asyncio.Event()

    async def start(self) -> None:
        """Resolve project ids in the background (retrying a few times while Langfuse is unreachable)."""
        if self._task is None:
            self._task = asyncio.create_task(self._resolve_all(), name="langfuse-links")

    async def settled(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until every exporting tenant's first project lookup has an answer (a project, or an error), at most
        ``timeout`` seconds; returns at once after that, or when the lookups were never started. For what is
        posted right at start-up (a report that was due while relay was down), so it carries its links."""
        if self._task is None or not self._unsettled:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._settled.wait()), timeout)
        except TimeoutError:
            pass

    def _answered(self, tenant: str) -> None:
        self._unsettled.discard(tenant)
        if not self._unsettled:
            self._settled.set()

    async def shutdown(self, deadline: float) -> None:
        """Cancel resolution still in progress."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def set_project(self, tenant: str, project_id: str) -> None:
        """Record ``tenant``'s Langfuse project id (tests and the resolver)."""
        self._projects[tenant] = project_id

    def session_url(self, tenant: str, session_id: str) -> str | None:
        """The session page of ``session_id`` in ``tenant``'s project, or None when unknown."""
        return self._url(tenant, "sessions", session_id)

    def trace_url(self, tenant: str, trace_id: str) -> str | None:
        """The trace page of ``trace_id`` (32 hex digits) in ``tenant``'s project, or None when unknown."""
        return self._url(tenant, "traces", trace_id)

    def links(self, labels: dict[str, str], session: str | None = None, trace: str | None = None) -> dict[str, str]:
        """Links for an alert with ``labels`` (``tenant`` required) and a sample ``session``/``trace`` id (the
        labels' own ``session``/``trace`` win). Titles: ``Langfuse session``, ``Langfuse trace``."""
        tenant = labels.get("tenant", "")
        out: dict[str, str] = {}
        s = labels.get("session") or session
        t = labels.get("trace") or trace
        if s and (url := self.session_url(tenant, s)):
            out["Langfuse session"] = url
        if t and (url := self.trace_url(tenant, t)):
            out["Langfuse trace"] = url
        return out

    def _url(self, tenant: str, kind: str, ident: str) -> str | None:
        cfg = self._tenants.get(tenant)
        pid = self._projects.get(tenant)
        if cfg is None or pid is None or not cfg.langfuse.base_url:
            return None
        return f"{cfg.langfuse.base_url.rstrip('/')}/project/{quote(pid, safe='')}/{kind}/{quote(ident, safe='')}"

    async def _resolve_all(self) -> None:
        await asyncio.gather(*(self._resolve(t) for t in self._tenants.values() if t.langfuse.enabled))

    async def _resolve(self, tenant: TenantConfig, attempts: int | None = None) -> None:
        """Ask ``tenant``'s project id until Langfuse answers (``attempts`` None: no limit — Langfuse may start
        after relay, e.g. in one compose file; backoff up to 5 minutes). Refused keys and a 404 are logged as
        errors once and end the attempts: they need a config fix and a restart."""
        # the TLS context reads the CA bundle: off the event loop, which is acknowledging telemetry at start-up
        ssl_context = await asyncio.to_thread(client_ssl_context, self._tls)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=1),
            timeout=aiohttp.ClientTimeout(total=10),
        ) as http:
            await self._ask(tenant, http, attempts)

    async def _ask(self, tenant: TenantConfig, http: aiohttp.ClientSession, attempts: int | None) -> None:
        lf = tenant.langfuse
        assert lf.public_key is not None and lf.secret_key is not None and lf.base_url is not None
        url = f"{lf.base_url.rstrip('/')}/api/public/projects"
        headers = {"Authorization": lf.authorization()}
        for attempt in range(attempts) if attempts is not None else itertools.count():
            status: int | None = None
            try:
                async with http.get(url, headers=headers) as resp:
                    status = resp.status
                    resp.raise_for_status()
                    body = await resp.json(content_type=None)
                project = _first_project(body)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # network or auth: links are a convenience, never fatal
                self._answered(tenant.name)
                if status in (401, 403):  # known now, seconds after start: say it loudly, not at info
                    log.error(
                        "tenant %s: Langfuse refused the project keys (HTTP %s from GET %s): check the "
                        "tenant's public and secret key (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY); exports "
                        "will be dead-lettered until they are fixed",
                        tenant.name,
                        status,
                        url,
                    )
                    return
                if status == 404:
                    log.error(
                        "tenant %s: HTTP 404 from GET %s: base_url must be the Langfuse host (e.g. "
                        "https://cloud.langfuse.com), without an /api/... path",
                        tenant.name,
                        url,
                    )
                    return
                (log.warning if attempt % 10 == 0 else log.info)(
                    "Langfuse project of tenant %s not resolved yet (%s%s); links are left out until it is",
                    tenant.name,
                    type(e).__name__,
                    f" HTTP {status}" if status else "",
                )
                await asyncio.sleep(min(300.0, 2.0 * 2 ** min(attempt, 8)))
                continue
            if project is not None:
                self.set_project(tenant.name, project)
            self._answered(tenant.name)
            return


def _first_project(body: object) -> str | None:
    """The first project id of a ``GET /api/public/projects`` answer ``{"data": [{"id": …}, …]}``, or None for an
    empty list; ``ValueError`` for another shape (handled like any failed attempt)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("projects answer without a data list")
    if not data:
        return None
    pid = data[0].get("id") if isinstance(data[0], dict) else None
    if not isinstance(pid, str) or not pid:
        raise ValueError("projects answer without a project id")
    return pid
