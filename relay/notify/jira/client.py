"""A minimal async Jira REST client (aiohttp) for the Jira notifier: Cloud (REST v3) and Data Center (REST v2).

Only the calls relay needs (Jira Cloud REST v3 https://developer.atlassian.com/cloud/jira/platform/rest/v3/
and the Data Center REST reference https://docs.atlassian.com/software/jira/docs/api/REST/latest/):

=========================  ====================================================================================
search                     Cloud ``POST /rest/api/3/search/jql`` ``{jql, fields, maxResults, nextPageToken}`` →
                           ``{issues, nextPageToken, isLast}`` (cursor paging, no ``total``; the old
                           ``/search`` answers 410 Gone on Cloud, CHANGE-2046). DC ``POST /rest/api/2/search``
                           ``{jql, startAt, maxResults, fields}`` → ``{startAt, maxResults, total, issues}``.
get / create / update      ``GET|PUT /issue/{key}``, ``POST /issue`` → 201 ``{id, key, self}``
comments                   ``POST /issue/{key}/comment`` (ADF on v3, string on v2), ``GET …/comment?orderBy=-created``
transitions                ``GET /issue/{key}/transitions`` → ``{transitions: [{id, name, to}]}``;
                           ``POST`` ``{transition: {id}}``
check                      ``GET /myself``, ``/project/{key}``, ``/project/{key}/statuses``, ``/priority``, ``/field``
=========================  ====================================================================================

Errors become :class:`~relay.notify.base.NotifyError`: 408, 429 and every 5xx, connection errors and timeouts
are retryable (``retry_after`` from ``Retry-After``, seconds or HTTP-date); other statuses are permanent, with
Jira's ``errorMessages`` / ``errors`` in the message. ``ambiguous`` on the error tells that the request was sent
but its outcome is unknown (no response, or a 500/502/504 from a proxy), which matters for issue creation.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp

from relay.exporters.retry import parse_retry_after
from relay.notify.base import NotifyError
from relay.notify.http import LazySession
from relay.notify.jira.config import JiraConfig

__all__ = ["JiraClient", "JiraError", "jira_error_text"]

_SEARCH_PAGE = 50
_MAX_PAGES = 10


class JiraError(NotifyError):
    """A failed Jira call: :class:`NotifyError` plus ``ambiguous`` (the request may have taken effect) and
    ``jira_messages`` (Jira's ``errorMessages`` and ``errors`` flattened to ``"field: message"`` strings)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        ambiguous: bool = False,
        jira_messages: list[str] | None = None,
    ):
        super().__init__(message, retryable=retryable, retry_after=retry_after, status=status)
        self.ambiguous = ambiguous
        self.jira_messages = jira_messages or []


def jira_error_text(body: Any) -> list[str]:
    """Jira's error body ``{"errorMessages": [...], "errors": {field: message}}`` as a list of strings; a
    non-JSON body gives its first 300 characters."""
    if isinstance(body, dict):
        out = [str(m) for m in body.get("errorMessages") or []]
        out += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
        if out:
            return out
        if body.get("message"):
            return [str(body["message"])]
    if isinstance(body, str) and body.strip():
        return [body.strip()[:300]]
    return []


class JiraClient:
    """REST calls against one Jira site, authenticated per ``config.flavor``. Create the client inside a running
    event loop is not required: the aiohttp session is opened on first use; call :meth:`close` when done.
    Paths passed to :meth:`request` are relative to ``/rest/api/{2|3}/``."""

    def __init__(self, config: JiraConfig):
        self.config = config
        self.base = f"{config.api_url}/rest/api/{config.api_version}/"
        if config.flavor == "cloud":
            raw = f"{config.user}:{config.api_token.get_secret_value() if config.api_token else ''}"
            self._auth = "Basic " + base64.b64encode(raw.encode()).decode()
        else:
            pat = config.personal_access_token.get_secret_value() if config.personal_access_token else ""
            self._auth = f"Bearer {pat}"
        self._http = LazySession(
            config.timeout,
            config.tls,
            {
                "Authorization": self._auth,
                "Accept": "application/json",
                "Accept-Language": "en",
                "User-Agent": "relay-jira",
            },
        )

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        await self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
        missing_ok: bool = False,
    ) -> Any:
        """One call; returns the parsed JSON body (None for an empty body, or for 404 with ``missing_ok``).
        Raises :class:`JiraError` (retryable or permanent, see the module docstring)."""
        what = f"{method} {path.split('?')[0]}"
        try:
            async with self._http.get().request(
                method, self.base + path, json=json_body, params=params, allow_redirects=False
            ) as resp:
                text = await resp.text()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            raise JiraError(f"Jira {what}: cannot connect: {exc.os_error or exc}", retryable=True) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"failed: {type(exc).__name__} {exc}"
            raise JiraError(f"Jira {what} {kind}", retryable=True, ambiguous=True) from None
        try:
            body: Any = json.loads(text) if text.strip() else None
        except ValueError:
            body = text
        if status in ok:
            return body
        if status == 404 and missing_ok:
            return None
        messages = jira_error_text(body)
        detail = "; ".join(messages) or resp.reason or ""
        message = f"Jira {what}: HTTP {status}: {detail}"
        if status in (408, 429) or status >= 500:
            raise JiraError(
                message,
                retryable=True,
                retry_after=retry_after,
                status=status,
                ambiguous=status in (500, 502, 504),
                jira_messages=messages,
            )
        raise JiraError(message, retryable=False, status=status, jira_messages=messages)

    # -- issues
    async def search(self, jql: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every issue matching ``jql`` (at most 500), each ``{id, key, fields}`` with ``fields`` as requested.
        Cloud pages with ``nextPageToken``, Data Center with ``startAt``."""
        issues: list[dict[str, Any]] = []
        if self.config.flavor == "cloud":
            token: str | None = None
            for _ in range(_MAX_PAGES):
                body: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": _SEARCH_PAGE}
                if token:
                    body["nextPageToken"] = token
                page = await self.request("POST", "search/jql", json_body=body) or {}
                issues += page.get("issues") or []
                token = page.get("nextPageToken")
                if page.get("isLast", token is None) or not token:
                    break
        else:
            start = 0
            for _ in range(_MAX_PAGES):
                body = {"jql": jql, "fields": fields, "maxResults": _SEARCH_PAGE, "startAt": start}
                page = await self.request("POST", "search", json_body=body) or {}
                got = page.get("issues") or []
                issues += got
                start += len(got)
                if not got or start >= int(page.get("total", 0)):
                    break
        return issues

    async def get_issue(self, key: str, fields: list[str]) -> dict[str, Any] | None:
        """``{id, key, fields}`` of issue ``key``, or None when it does not exist (404)."""
        return await self.request("GET", f"issue/{key}", params={"fields": ",".join(fields)}, missing_ok=True)

    async def create_issue(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Create an issue; returns ``{id, key, self}``."""
        return await self.request("POST", "issue", json_body={"fields": fields}, ok=(200, 201))

    async def update_issue(self, key: str, fields: dict[str, Any]) -> None:
        """``PUT`` new values of ``fields``."""
        await self.request("PUT", f"issue/{key}", json_body={"fields": fields}, ok=(200, 204))

    async def add_comment(self, key: str, body: Any) -> dict[str, Any]:
        """Add a comment (``body`` ADF on Cloud, a wiki-markup string on Data Center)."""
        return await self.request("POST", f"issue/{key}/comment", json_body={"body": body}, ok=(200, 201))

    async def recent_comments(self, key: str, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` newest comments of ``key`` (newest first)."""
        page = await self.request(
            "GET", f"issue/{key}/comment", params={"orderBy": "-created", "maxResults": str(n), "startAt": "0"}
        )
        return list((page or {}).get("comments") or [])

    async def transitions(self, key: str) -> list[dict[str, Any]]:
        """The transitions available for ``key`` in its current status: ``[{id, name, to: {name, statusCategory},
        fields: {field id: {required, allowedValues…}}}]`` — ``fields`` lists the fields of the transition's screen
        (``expand=transitions.fields``; a field not on it cannot be set by the transition, Jira answers 400)."""
        page = await self.request("GET", f"issue/{key}/transitions", params={"expand": "transitions.fields"})
        return list((page or {}).get("transitions") or [])

    async def transition(self, key: str, transition_id: str, resolution: str | None = None) -> None:
        """Apply transition ``transition_id`` (optionally setting ``resolution`` by name)."""
        body: dict[str, Any] = {"transition": {"id": str(transition_id)}}
        if resolution:
            body["fields"] = {"resolution": {"name": resolution}}
        await self.request("POST", f"issue/{key}/transitions", json_body=body, ok=(200, 204))
