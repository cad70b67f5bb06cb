"""REST handlers of the fake Jira (``tests/fakes/jira.py``): routing of ``/rest/api/{2|3}/…`` paths, search,
create, update, comments and transitions, with Jira's status codes and error bodies. Used as a mixin by
:class:`~tests.fakes.jira.FakeJira`, which provides the state (``projects``, ``_issues``, ``clock`` …) and calls
:meth:`_JiraRoutes._route` under its lock."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from tests.fakes.jira_jql import JqlError, parse_jql
from tests.fakes.jira_model import (
    PRIORITIES,
    RESOLUTIONS,
    STATUSES,
    AppliedTransition,
    FakeComment,
    FakeIssue,
    FakeProject,
    adf_text,
    jira_time,
    rich_text_problem,
    validate_create,
)

__all__ = ["err_body"]


def err_body(messages: list[str] | None = None, errors: dict[str, str] | None = None) -> dict[str, Any]:
    """Jira's error body ``{"errorMessages": [...], "errors": {field: message}}``."""
    return {"errorMessages": messages or [], "errors": errors or {}}


_err = err_body


class _JiraRoutes:
    """Route handlers; state lives on the :class:`~tests.fakes.jira.FakeJira` subclass."""

    flavor: str
    version: str
    user: str
    projects: dict[str, FakeProject]
    custom_fields: dict[str, tuple[str, str]]
    workflow: dict[str, list[tuple[str, str, str]]]
    transition_fields: dict[str, tuple[str, ...]]
    search_lag: float
    _issues: dict[str, FakeIssue]
    _seq: dict[str, int]
    _next_id: int
    _applied: list[AppliedTransition]

    clock: Callable[[], float]
    base_url: str

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """Dispatch under the lock; returns (status, JSON payload or None for an empty body)."""
        parts = path.split("/")
        if path == "myself" and method == "GET":
            if self.flavor == "cloud":
                return 200, {
                    "accountId": "5b10ac8d82e05b22cc7d4ef5",
                    "emailAddress": self.user,
                    "displayName": "Relay",
                    "active": True,
                }
            return 200, {"name": "relay", "key": "relay", "displayName": "Relay", "active": True}
        if parts[0] == "project" and len(parts) in (2, 3) and method == "GET":
            project = self._project(parts[1])
            if project is None:
                return 404, _err([f"No project could be found with key '{parts[1]}'."])
            if len(parts) == 2:
                return 200, {
                    "id": project.id,
                    "key": project.key,
                    "name": project.name,
                    "issueTypes": [{"id": str(10000 + i), "name": n} for i, n in enumerate(project.issue_types)],
                    "components": [{"id": str(20000 + i), "name": n} for i, n in enumerate(project.components)],
                }
            if parts[2] == "statuses":
                statuses = [
                    {"id": v[0], "name": k, "statusCategory": {"id": v[3], "key": v[1], "name": v[2]}}
                    for k, v in STATUSES.items()
                ]
                return 200, [
                    {"id": str(10000 + i), "name": n, "statuses": statuses} for i, n in enumerate(project.issue_types)
                ]
        if path == "priority" and method == "GET":
            return 200, [{"id": i, "name": n} for n, i in PRIORITIES.items()]
        if path == "priority/search" and method == "GET" and self.flavor == "cloud":
            values = [{"id": i, "name": n} for n, i in PRIORITIES.items()]
            return 200, {"startAt": 0, "maxResults": 50, "total": len(values), "isLast": True, "values": values}
        if path == "field" and method == "GET":
            system = [
                {"id": f, "name": f.title(), "custom": False}
                for f in ("summary", "description", "labels", "priority", "components", "status", "resolution")
            ]
            return 200, system + [
                {"id": k, "name": v[0], "custom": True, "schema": {"type": v[1]}} for k, v in self.custom_fields.items()
            ]
        if path in ("search/jql", "search"):
            if method == "POST":
                return self._search(body if isinstance(body, dict) else {})
            if method == "GET":
                q: dict[str, Any] = dict(query)
                if "fields" in q:
                    q["fields"] = q["fields"].split(",")
                for k in ("maxResults", "startAt"):
                    if k in q:
                        q[k] = int(q[k])
                return self._search(q)
        if path == "issue" and method == "POST":
            return self._create(body)
        if parts[0] == "issue" and len(parts) >= 2:
            issue = self._issues.get(parts[1].upper()) or next(
                (i for i in self._issues.values() if i.id == parts[1]), None
            )
            if issue is None:
                return 404, _err(["Issue does not exist or you do not have permission to see it."])
            if len(parts) == 2 and method == "GET":
                wanted = query.get("fields")
                fields = None if not wanted or wanted in ("*all", "*navigable") else set(wanted.split(","))
                return 200, self._issue_json(issue, fields)
            if len(parts) == 2 and method == "PUT":
                return self._update(issue, body)
            if len(parts) == 3 and parts[2] == "comment":
                return self._comments(issue, method, query, body)
            if len(parts) == 3 and parts[2] == "transitions":
                return self._transitions(issue, method, body, query)
        return 404, _err([f"No route for {method} /rest/api/{self.version}/{path} in the fake"])

    # ------------------------------------------------------------------------------------------------ handlers
    def _project(self, ref: str) -> FakeProject | None:
        return next((p for p in self.projects.values() if ref.upper() in (p.key.upper(), p.id)), None)

    def _issue_json(self, issue: FakeIssue, fields: set[str] | None) -> dict[str, Any]:
        return {
            "id": issue.id,
            "key": issue.key,
            "self": f"{self.base_url}/rest/api/{self.version}/issue/{issue.id}",
            "fields": issue.fields_json(fields, self.projects[issue.project]),
        }

    def _search(self, body: dict[str, Any]) -> tuple[int, Any]:
        jql = body.get("jql")
        if not isinstance(jql, str):
            return 400, _err(["The 'jql' parameter is required."])
        try:
            query = parse_jql(jql, now=self.clock(), projects=set(self.projects))
        except JqlError as exc:
            return 400, _err([str(exc)])
        if self.flavor == "cloud" and query.where is None:
            return 400, _err(
                ["Unbounded JQL queries are not allowed here. Please add a search restriction to your query."]
            )
        now = self.clock()
        hits = [
            i
            for i in self._issues.values()
            if now >= i.created + self.search_lag and (query.where is None or query.where(i.view()))
        ]
        for name, asc in reversed(query.order):
            present = [i for i in hits if i.view().get(name) is not None]
            absent = [i for i in hits if i.view().get(name) is None]
            present.sort(key=lambda i: (_sort_key(i.view()[name]), int(i.id)), reverse=not asc)  # ties: by id
            hits = present + absent
        max_results = max(0, min(int(body.get("maxResults", 50)), 100 if self.flavor == "datacenter" else 5000))
        raw_fields = body.get("fields")
        if self.flavor == "cloud":
            wanted = set(raw_fields) if raw_fields else set()  # search/jql returns ids only unless asked
            token = body.get("nextPageToken")
            start = 0
            if token:
                try:
                    start = int(base64.b64decode(token).decode().split(":", 1)[0])
                except (ValueError, UnicodeDecodeError):
                    return 400, _err(["Invalid nextPageToken."])
            page = hits[start : start + max_results]
            out: dict[str, Any] = {"issues": [self._issue_json(i, None if "*all" in wanted else wanted) for i in page]}
            if start + max_results < len(hits):
                out["nextPageToken"] = base64.b64encode(f"{start + max_results}:{len(jql)}".encode()).decode()
                out["isLast"] = False
            else:
                out["isLast"] = True
            return 200, out
        start = int(body.get("startAt", 0))
        wanted_dc = None if not raw_fields or "*all" in raw_fields or "*navigable" in raw_fields else set(raw_fields)
        page = hits[start : start + max_results]
        return 200, {
            "startAt": start,
            "maxResults": max_results,
            "total": len(hits),
            "issues": [self._issue_json(i, wanted_dc) for i in page],
        }

    def _create(self, body: Any) -> tuple[int, Any]:
        fields = body.get("fields") if isinstance(body, dict) else None
        errors, project = validate_create(
            fields, version=self.version, projects=self.projects, custom_fields=self.custom_fields
        )
        if errors or project is None:
            return 400, _err([], errors)
        assert isinstance(fields, dict)
        now = self.clock()
        self._seq[project.key] = self._seq.get(project.key, 0) + 1
        self._next_id += 1
        key = f"{project.key}-{self._seq[project.key]}"
        custom = {k: v for k, v in fields.items() if k.startswith("customfield_")}
        issue = FakeIssue(
            id=str(self._next_id),
            key=key,
            project=project.key,
            issue_type=fields["issuetype"]["name"],
            summary=fields["summary"],
            description=fields.get("description"),
            created=now,
            updated=now,
            labels=list(fields.get("labels") or []),
            priority=(fields.get("priority") or {}).get("name"),
            components=[c["name"] for c in fields.get("components") or []],
            custom=custom,
        )
        self._issues[key] = issue
        return 201, {"id": issue.id, "key": key, "self": f"{self.base_url}/rest/api/{self.version}/issue/{issue.id}"}

    def _update(self, issue: FakeIssue, body: Any) -> tuple[int, Any]:
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return 400, _err(["Can not deserialize instance of fields"])
        errors: dict[str, str] = {}
        for fid, value in fields.items():
            if fid == "summary":
                if not isinstance(value, str) or not value.strip() or len(value) > 255 or "\n" in value:
                    errors[fid] = "Summary must be a single line of at most 255 characters."
            elif fid == "priority":
                if not isinstance(value, dict) or value.get("name") not in PRIORITIES:
                    errors[fid] = "Specify the Priority (id or name) in the string format"
            elif fid == "description":
                problem = rich_text_problem(value, self.version)
                if problem:
                    errors[fid] = problem
            elif fid == "labels":
                if not isinstance(value, list) or any(not isinstance(v, str) or " " in v for v in value):
                    errors[fid] = "Labels must be strings without spaces."
            elif fid not in self.custom_fields:
                errors[fid] = f"Field '{fid}' cannot be set. It is not on the appropriate screen, or unknown."
        if errors:
            return 400, _err([], errors)
        for fid, value in fields.items():
            if fid == "priority":
                issue.priority = value["name"]
            elif fid in ("summary", "description", "labels"):
                setattr(issue, fid, value)
            else:
                issue.custom[fid] = value
        issue.updated = self.clock()
        return 204, None

    def _comments(self, issue: FakeIssue, method: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST":
            content = body.get("body") if isinstance(body, dict) else None
            problem = rich_text_problem(content, self.version)
            if content is None or problem or not adf_text(content).strip():
                return 400, _err([], {"comment": problem or "Comment body can not be empty!"})
            now = self.clock()
            self._next_id += 1
            comment = FakeComment(str(self._next_id), content, now, self.user if self.flavor == "cloud" else "relay")
            issue.comments.append(comment)
            issue.updated = now
            return 201, self._comment_json(comment)
        if method == "GET":
            comments = list(issue.comments)
            order = query.get("orderBy", "created")
            if order.lstrip("+-") != "created":
                return 400, _err([f"Invalid orderBy value '{order}'"])
            if order.startswith("-"):
                comments.reverse()
            start, limit = int(query.get("startAt", 0)), int(query.get("maxResults", 50))
            page = comments[start : start + limit]
            return 200, {
                "startAt": start,
                "maxResults": limit,
                "total": len(comments),
                "comments": [self._comment_json(c) for c in page],
            }
        return 405, _err(["Method not allowed"])

    def _comment_json(self, c: FakeComment) -> dict[str, Any]:
        return {
            "id": c.id,
            "body": c.body,
            "created": _jt(c.created),
            "updated": _jt(c.created),
            "author": {"displayName": c.author},
        }

    def _screen(self, tid: str, expand: bool) -> dict[str, Any]:
        """``fields`` of transition ``tid``'s screen as ``expand=transitions.fields`` shows them."""
        out: dict[str, Any] = {}
        for fid in self.transition_fields.get(tid, ()):
            if fid == "resolution":
                out[fid] = {
                    "required": False,
                    "name": "Resolution",
                    "key": "resolution",
                    "operations": ["set"],
                    "schema": {"type": "resolution", "system": "resolution"},
                    "allowedValues": [{"id": i, "name": n} for n, i in RESOLUTIONS.items()],
                }
            else:
                out[fid] = {"required": False, "name": fid, "key": fid, "operations": ["set"]}
        return out

    def _transitions(
        self, issue: FakeIssue, method: str, body: Any, query: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        available = self.workflow.get(issue.status, [])
        if method == "GET":
            expand = "transitions.fields" in (query or {}).get("expand", "")
            out = []
            for tid, name, to in available:
                t = {
                    "id": tid,
                    "name": name,
                    "hasScreen": bool(self.transition_fields.get(tid)),
                    "isGlobal": False,
                    "isInitial": False,
                    "isConditional": False,
                    "to": {
                        "id": STATUSES[to][0],
                        "name": to,
                        "statusCategory": {"id": STATUSES[to][3], "key": STATUSES[to][1], "name": STATUSES[to][2]},
                    },
                }
                if expand:
                    t["fields"] = self._screen(tid, True)
                out.append(t)
            return 200, {"expand": "transitions", "transitions": out}
        if method != "POST":
            return 405, _err(["Method not allowed"])
        tid = ((body or {}).get("transition") or {}).get("id") if isinstance(body, dict) else None
        match = next((t for t in available if t[0] == str(tid)), None)
        if match is None:
            return 400, _err([f"Transition id '{tid}' is not valid for this issue."])
        fields = body.get("fields") or {}
        if not isinstance(fields, dict):
            return 400, _err(["Can not deserialize instance of fields"])
        # real Jira: a field that is not on the transition's screen cannot be set (400), whatever its value
        off_screen = {
            fid: f"Field '{fid}' cannot be set. It is not on the appropriate screen, or unknown."
            for fid in fields
            if fid not in self.transition_fields.get(match[0], ())
        }
        if off_screen:
            return 400, _err([], off_screen)
        resolution = (fields.get("resolution") or {}).get("name")
        if resolution is not None and resolution not in RESOLUTIONS:
            return 400, _err([], {"resolution": f"Resolution '{resolution}' is not valid"})
        self._move(issue, match[0], match[1], match[2], resolution, self.clock())
        return 204, None

    def _move(self, issue: FakeIssue, tid: str, name: str, to: str, resolution: str | None, at: float) -> None:
        if to not in STATUSES:
            raise ValueError(f"unknown status {to!r}")
        before = issue.status
        issue.status = to
        if STATUSES[to][1] == "done":
            issue.resolution = resolution or issue.resolution or "Done"
            issue.resolutiondate = at
        else:
            issue.resolution, issue.resolutiondate = None, None
        issue.updated = at
        self._applied.append(AppliedTransition(issue.key, tid, name, before, to, at, issue.resolution))


def _jt(ts: float) -> str:
    return jira_time(ts) or ""


def _sort_key(value: Any) -> Any:
    if isinstance(value, tuple):
        value = value[0]
    if isinstance(value, list):
        value = ",".join(value)
    return (0, value) if isinstance(value, (int, float)) else (1, str(value).casefold())
