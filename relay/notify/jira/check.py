"""``relay check`` for a Jira integration: finds configuration problems before an alert does.

Calls (read-only; REST v3 on Cloud, v2 on Data Center): ``GET /myself`` (authentication), ``GET
/project/{key}`` (project, its ``issueTypes`` and ``components``), ``GET /priority`` (Data Center) or ``GET
/priority/search`` (Cloud; paged ``{values, isLast}``), ``GET /field`` (custom-field ids), and, for the
transition names, a one-issue search for a sample issue of the project and issue type in the status the
transition leaves (open for ``resolve_transition``, done for ``reopen_transition``) whose ``GET
/issue/{key}/transitions?expand=transitions.fields`` must offer it — and, for ``resolve_transition``, accept the
resolution relay sends (``resolve_resolution`` must be a field of the transition's screen and one of its allowed
values; a screen that requires a resolution needs ``resolve_resolution``). Transition names are workflow-specific
and only visible on an issue, so without a sample issue they are checked at first use instead.
"""

from __future__ import annotations

from relay.notify.jira.client import JiraClient, JiraError
from relay.notify.jira.config import JiraConfig

__all__ = ["check_jira"]


async def _sample(client: JiraClient, config: JiraConfig, done: bool) -> str | None:
    """The key of the newest issue of the project and issue type that is (not) done, or None."""
    jql = (
        f'project = "{config.project}" AND issuetype = "{config.issue_type}" AND statusCategory '
        f"{'=' if done else '!='} Done ORDER BY updated DESC"
    )
    if config.flavor == "cloud":
        page = await client.request("POST", "search/jql", json_body={"jql": jql, "fields": ["status"], "maxResults": 1})
    else:
        page = await client.request(
            "POST", "search", json_body={"jql": jql, "fields": ["status"], "maxResults": 1, "startAt": 0}
        )
    issues = (page or {}).get("issues") or []
    return str(issues[0]["key"]) if issues else None


async def _priorities(client: JiraClient, config: JiraConfig) -> set[str]:
    if config.flavor == "datacenter":
        return {str(p.get("name")) for p in await client.request("GET", "priority") or []}
    names: set[str] = set()
    start = 0
    for _ in range(20):
        page = await client.request("GET", "priority/search", params={"startAt": str(start), "maxResults": "50"}) or {}
        values = page.get("values") or []
        names |= {str(p.get("name")) for p in values}
        start += len(values)
        if page.get("isLast", True) or not values:
            break
    return names


def _resolution_problems(where: str, config: JiraConfig, transition: dict) -> list[str]:
    """Whether ``transition`` (with its screen ``fields``, ``expand=transitions.fields``) accepts the resolution
    relay sends: Jira refuses a transition setting a field that is not on its screen (400), and one whose screen
    requires a resolution when none is sent.
    https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-issueidorkey-transitions-get
    """
    fields = transition.get("fields")
    if not isinstance(fields, dict):
        return []  # this Jira did not expand the screen's fields: nothing to check
    name, resolution = transition.get("name"), config.resolve_resolution
    field = fields.get("resolution")
    if resolution and not isinstance(field, dict):
        return [
            f"{where}: resolve_transition {name!r} has no resolution field on its screen, so Jira rejects "
            f"resolve_resolution {resolution!r} (relay then resolves without it): remove resolve_resolution "
            f"or add the Resolution field to the transition's screen"
        ]
    if resolution and isinstance(field, dict):
        allowed = [str(v.get("name")) for v in field.get("allowedValues") or [] if isinstance(v, dict)]
        if allowed and resolution.casefold() not in {a.casefold() for a in allowed}:
            return [
                f"{where}: resolve_resolution {resolution!r} is not a resolution of resolve_transition "
                f"{name!r} (available: {', '.join(allowed)})"
            ]
    if not resolution and isinstance(field, dict) and field.get("required"):
        return [f"{where}: resolve_transition {name!r} requires a resolution: set resolve_resolution"]
    return []


async def check_jira(client: JiraClient, config: JiraConfig) -> list[str]:
    """Problems found for ``config`` (human-readable, each naming the setting to fix); empty when all is well.
    Never raises for Jira errors: an unreachable Jira or a failed call is reported as a problem."""
    where = f"jira {config.api_url} project {config.project}"
    problems: list[str] = []
    try:
        try:
            await client.request("GET", "myself")
        except JiraError as exc:
            if exc.status in (401, 403):
                who = "user/api_token" if config.flavor == "cloud" else "personal_access_token"
                return [f"{where}: authentication failed ({who}): {exc}"]
            raise
        project = await client.request("GET", f"project/{config.project}", missing_ok=True)
        if project is None:
            return [f"{where}: project {config.project!r} not found (or no permission to see it)"]
        types = [str(t.get("name")) for t in project.get("issueTypes") or []]
        if types and config.issue_type not in types:
            problems.append(
                f"{where}: issue_type {config.issue_type!r} does not exist in the project "
                f"(available: {', '.join(types)})"
            )
        components = {str(c.get("name")) for c in project.get("components") or []}
        for c in config.components:
            if c not in components:
                problems.append(f"{where}: component {c!r} does not exist in the project")
        priorities = await _priorities(client, config)
        for severity, name in config.priority_map.items():
            if priorities and name not in priorities:
                problems.append(
                    f"{where}: priority_map.{severity}: priority {name!r} does not exist "
                    f"(available: {', '.join(sorted(priorities))})"
                )
        field_ids = {str(f.get("id")) for f in await client.request("GET", "field") or []}
        for fid in [*config.custom_fields, *([config.dedup_field] if config.dedup_field else [])]:
            if field_ids and fid not in field_ids:
                problems.append(f"{where}: field {fid!r} does not exist")
        for option, transition, done in (
            ("resolve_transition", config.resolve_transition, False),
            ("reopen_transition", config.reopen_transition, True),
        ):
            if not transition:
                continue
            key = await _sample(client, config, done)
            if key is None:
                continue
            transitions = await client.transitions(key)
            wanted = transition.casefold()
            match = next((t for t in transitions if str(t.get("name", "")).casefold() == wanted), None) or next(
                (t for t in transitions if str((t.get("to") or {}).get("name", "")).casefold() == wanted), None
            )
            if match is None:
                problems.append(
                    f"{where}: {option} {transition!r} is not offered on {key} (a "
                    f"{'done' if done else 'open'} {config.issue_type})"
                )
            elif option == "resolve_transition":
                problems += _resolution_problems(where, config, match)
    except JiraError as exc:
        problems.append(f"{where}: {exc}")
    return problems
