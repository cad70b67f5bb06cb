"""Jira integration config (owned by the Jira notifier)."""

from __future__ import annotations

from typing import Literal



from relay.config import Duration, OptionalSecret, _Model

__all__ = ["JiraConfig"]


class JiraConfig(_Model):
    """A Jira project (Cloud: REST v3 + email/API token; Data Center: REST v2 + personal access token)."""

    flavor: Literal["cloud", "datacenter"] = "cloud"
    api_url: str
    user: str | None = None
    api_token: OptionalSecret = None
    personal_access_token: OptionalSecret = None
    project: str
    issue_type: str = "Bug"
    send_resolved: bool = True
    timeout: Duration = 10.0
