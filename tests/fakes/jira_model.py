"""Data model and validation of the fake Jira (``tests/fakes/jira.py``): projects, issues, comments, the
default workflow, and Jira's create-time field validation with its error wording.

Shapes follow the Jira REST references (Cloud v3 https://developer.atlassian.com/cloud/jira/platform/rest/v3/ ,
Data Center v2) and the ADF spec (https://developer.atlassian.com/cloud/jira/platform/apis/document/structure/).
Times are unix seconds; Jira renders them as ``2026-05-01T10:00:00.000+0000``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FakeProject",
    "FakeIssue",
    "FakeComment",
    "AppliedTransition",
    "STATUSES",
    "DEFAULT_WORKFLOW",
    "DEFAULT_TRANSITION_FIELDS",
    "RESOLUTIONS",
    "PRIORITIES",
    "DEFAULT_CUSTOM_FIELDS",
    "jira_time",
    "adf_problem",
    "adf_text",
    "rich_text_problem",
    "validate_create",
]

#: status name → (id, statusCategory key, statusCategory name, statusCategory id)
STATUSES = {
    "To Do": ("10000", "new", "To Do", 2),
    "In Progress": ("3", "indeterminate", "In Progress", 4),
    "Done": ("10001", "done", "Done", 3),
}
#: status → transitions available from it: (id, name, target status). Jira's simple workflow plus "Reopen".
DEFAULT_WORKFLOW: dict[str, list[tuple[str, str, str]]] = {
    "To Do": [("11", "Start Progress", "In Progress"), ("31", "Done", "Done")],
    "In Progress": [("21", "Stop Progress", "To Do"), ("31", "Done", "Done")],
    "Done": [("41", "Reopen", "To Do")],
}
#: transition id → fields on its screen (what ``fields`` a POST …/transitions may set; others are a 400).
DEFAULT_TRANSITION_FIELDS: dict[str, tuple[str, ...]] = {"31": ("resolution",)}
RESOLUTIONS = {"Done": "10000", "Won't Fix": "10001", "Duplicate": "10002", "Cannot Reproduce": "10003"}
PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
#: custom field id → (name, type): ``text`` (string ≤ 255), ``textarea``, ``select`` ({"value"}), ``multiselect``
#: ([{"value"}]), ``number``.
DEFAULT_CUSTOM_FIELDS = {
    "customfield_10050": ("Relay dedup key", "text"),
    "customfield_10010": ("Team", "select"),
    "customfield_10020": ("Cost USD", "number"),
}

_INLINE = {"text", "hardBreak", "mention", "emoji", "inlineCard", "date", "status"}
_BLOCK = {"paragraph", "heading", "bulletList", "orderedList", "codeBlock", "blockquote", "rule", "panel", "table"}
_MARKS = {"strong", "em", "code", "link", "strike", "underline", "textColor", "subsup"}


def jira_time(ts: float | None) -> str | None:
    """Unix seconds → Jira's ``2026-05-01T10:00:00.000+0000`` (None stays None)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}+0000"


@dataclass
class FakeProject:
    """A Jira project: ``key``, issue type names, component names, and fields required at create."""

    key: str
    name: str = ""
    id: str = ""
    issue_types: tuple[str, ...] = ("Bug", "Task")
    components: tuple[str, ...] = ()
    required_fields: tuple[str, ...] = ()


@dataclass
class FakeComment:
    """A comment: ``body`` is ADF (Cloud) or a string (Data Center); ``created`` unix seconds."""

    id: str
    body: Any
    created: float
    author: str

    @property
    def text(self) -> str:
        """The body as plain text."""
        return adf_text(self.body)


@dataclass
class AppliedTransition:
    """A transition applied to an issue (through the API or :meth:`FakeJira.set_status`)."""

    issue: str
    id: str
    name: str
    from_status: str
    to_status: str
    at: float
    resolution: str | None = None


@dataclass
class FakeIssue:
    """An issue as the fake stores it (``custom`` holds ``customfield_N`` values as sent)."""

    id: str
    key: str
    project: str
    issue_type: str
    summary: str
    description: Any
    created: float
    labels: list[str] = field(default_factory=list)
    priority: str | None = None
    components: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    status: str = "To Do"
    resolution: str | None = None
    resolutiondate: float | None = None
    updated: float = 0.0
    comments: list[FakeComment] = field(default_factory=list)

    @property
    def status_category(self) -> str:
        """``new``, ``indeterminate`` or ``done``."""
        return STATUSES[self.status][1]

    @property
    def description_text(self) -> str:
        """The description as plain text."""
        return adf_text(self.description)

    def view(self) -> dict[str, Any]:
        """The JQL evaluation view (see ``jira_jql``)."""
        st = STATUSES[self.status]
        return {
            "project": (self.project,),
            "key": self.key,
            "issuetype": self.issue_type,
            "summary": self.summary,
            "labels": list(self.labels),
            "status": self.status,
            "statuscategory": (st[2], st[1]),
            "resolution": self.resolution,
            "resolutiondate": self.resolutiondate,
            "created": self.created,
            "updated": self.updated,
            "priority": self.priority,
            **self.custom,
        }

    def fields_json(self, wanted: set[str] | None, project: FakeProject) -> dict[str, Any]:
        """``fields`` of the REST issue representation; ``wanted`` None means all."""
        st = STATUSES[self.status]
        all_fields: dict[str, Any] = {
            "summary": self.summary,
            "description": self.description,
            "status": {"id": st[0], "name": self.status, "statusCategory": {"id": st[3], "key": st[1], "name": st[2]}},
            "resolution": (
                {"id": RESOLUTIONS.get(self.resolution, "0"), "name": self.resolution} if self.resolution else None
            ),
            "resolutiondate": jira_time(self.resolutiondate),
            "created": jira_time(self.created),
            "updated": jira_time(self.updated),
            "labels": list(self.labels),
            "priority": {"id": PRIORITIES.get(self.priority, "0"), "name": self.priority} if self.priority else None,
            "issuetype": {"id": str(10000 + project.issue_types.index(self.issue_type)), "name": self.issue_type},
            "project": {"id": project.id, "key": project.key, "name": project.name},
            "components": [{"name": c} for c in self.components],
        }
        for fid in DEFAULT_CUSTOM_FIELDS:
            all_fields[fid] = self.custom.get(fid)
        all_fields.update(self.custom)
        if wanted is None:
            return all_fields
        return {k: v for k, v in all_fields.items() if k in wanted}


def adf_text(node: Any) -> str:
    """Plain text of an ADF node, or the string itself."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    if node.get("type") == "hardBreak":
        return "\n"
    inner = "".join(adf_text(c) for c in node.get("content") or [])
    return inner + "\n" if node.get("type") in ("paragraph", "heading", "listItem") else inner


def _node_problem(node: Any, allowed: set[str], path: str) -> str | None:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return f"{path}: a node must be an object with a type"
    t = node["type"]
    if t not in allowed:
        return f"{path}: node type '{t}' is not allowed here"
    content = node.get("content")
    if content is not None and not isinstance(content, list):
        return f"{path}: content must be an array"
    if t == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            return f"{path}: text nodes need non-empty text"
        for mark in node.get("marks") or []:
            if not isinstance(mark, dict) or mark.get("type") not in _MARKS:
                return f"{path}: invalid mark {mark!r}"
            if mark["type"] == "link" and not isinstance((mark.get("attrs") or {}).get("href"), str):
                return f"{path}: link marks need attrs.href"
        return None
    if "text" in node:
        return f"{path}: only text nodes have text"
    if t == "heading" and (node.get("attrs") or {}).get("level") not in range(1, 7):
        return f"{path}: heading needs attrs.level 1-6"
    if t in ("paragraph", "heading"):
        child_allowed = _INLINE
    elif t in ("bulletList", "orderedList"):
        child_allowed = {"listItem"}
        if not content:
            return f"{path}: a list needs items"
    elif t in ("listItem", "blockquote", "panel"):
        child_allowed = {"paragraph", "bulletList", "orderedList", "codeBlock", "heading"}
    elif t == "codeBlock":
        child_allowed = {"text"}
    else:
        child_allowed = set()
    for i, child in enumerate(content or []):
        problem = _node_problem(child, child_allowed, f"{path}.content[{i}]")
        if problem:
            return problem
    return None


def adf_problem(doc: Any) -> str | None:
    """Why ``doc`` is not a valid ADF document (None when it is)."""
    if not isinstance(doc, dict) or doc.get("type") != "doc" or doc.get("version") != 1:
        return "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
    if not isinstance(doc.get("content"), list):
        return "Operation value must be an Atlassian Document: doc.content must be an array"
    for i, node in enumerate(doc["content"]):
        problem = _node_problem(node, _BLOCK, f"content[{i}]")
        if problem:
            return f"INVALID_INPUT: {problem}"
    return None


def rich_text_problem(value: Any, version: str) -> str | None:
    """Problem with a description/comment body: ADF on REST v3, a string on v2."""
    if version == "3":
        return adf_problem(value)
    return None if isinstance(value, str) else "Operation value must be a string"


def _custom_problem(fid: str, kind: str, value: Any) -> str | None:
    if kind == "text":
        if not isinstance(value, str):
            return "Operation value must be a string"
        if len(value) > 255:
            return "The entered text is too long. It exceeds the allowed limit of 255 characters."
        return None
    if kind == "textarea":
        return None if isinstance(value, (str, dict)) else "Operation value must be a string"
    if kind == "select":
        ok = isinstance(value, dict) and isinstance(value.get("value") or value.get("id"), str)
        return None if ok else "Could not find valid 'id' or 'value' in the Parent Option object."
    if kind == "multiselect":
        ok = isinstance(value, list) and all(
            isinstance(v, dict) and isinstance(v.get("value") or v.get("id"), str) for v in value
        )
        return None if ok else "data was not an array"
    if kind == "number":
        return (
            None
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else "Operation value must be a number"
        )
    return None


def validate_create(
    fields: Any, *, version: str, projects: dict[str, FakeProject], custom_fields: dict[str, tuple[str, str]]
) -> tuple[dict[str, str], FakeProject | None]:
    """Jira's create validation: returns (``errors`` field → message, the project); empty errors when valid."""
    errors: dict[str, str] = {}
    if not isinstance(fields, dict):
        return {"fields": "fields must be an object"}, None
    proj_ref = fields.get("project") or {}
    project = None
    if isinstance(proj_ref, dict):
        ref = str(proj_ref.get("key") or proj_ref.get("id") or "")
        project = next((p for p in projects.values() if ref.upper() in (p.key.upper(), p.id)), None)
    if project is None:
        errors["project"] = "valid project is required"
    itype = fields.get("issuetype") or {}
    iname = itype.get("name") if isinstance(itype, dict) else None
    if not iname or (project is not None and iname not in project.issue_types):
        errors["issuetype"] = "Specify a valid issue type"
    summary = fields.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors["summary"] = "You must specify a summary of the issue."
    elif len(summary) > 255:
        errors["summary"] = "Summary must be less than 255 characters."
    elif "\n" in summary or "\r" in summary:
        errors["summary"] = "The summary is invalid because it contains newline characters."
    if "description" in fields and fields["description"] is not None:
        problem = rich_text_problem(fields["description"], version)
        if problem:
            errors["description"] = problem
    labels = fields.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(lb, str) for lb in labels):
        errors["labels"] = "data was not an array of strings"
    else:
        for lb in labels:
            if not lb or any(c.isspace() for c in lb):
                errors["labels"] = f"The label '{lb}' contains spaces which is invalid."
            elif len(lb) > 255:
                errors["labels"] = "The label must not exceed 255 characters."
    priority = fields.get("priority")
    if priority is not None and (not isinstance(priority, dict) or priority.get("name") not in PRIORITIES):
        name = priority.get("name") if isinstance(priority, dict) else priority
        errors["priority"] = f"Specify the Priority (id or name) in the string format; '{name}' is not valid"
    for comp in fields.get("components") or []:
        name = comp.get("name") if isinstance(comp, dict) else comp
        if project is not None and name not in project.components:
            errors["components"] = f"Component name '{name}' is not valid"
    standard = {"project", "issuetype", "summary", "description", "labels", "priority", "components"}
    for fid, value in fields.items():
        if fid in standard:
            continue
        if fid not in custom_fields:
            errors[fid] = f"Field '{fid}' cannot be set. It is not on the appropriate screen, or unknown."
            continue
        problem = _custom_problem(fid, custom_fields[fid][1], value)
        if problem:
            errors[fid] = problem
    if project is not None:
        for fid in project.required_fields:
            if fields.get(fid) in (None, "", []):
                name = custom_fields.get(fid, (fid, ""))[0]
                errors[fid] = f"{name} is required."
    return errors, project
