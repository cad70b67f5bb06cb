"""Usage reports: weekly (daily, monthly) Claude Code summaries computed from the usage ledger, rendered as
Markdown, JSON, CSV, Slack Block Kit and a PNG chart, posted on cron schedules exactly once per period
(``relay.reports.schedule``) and printed by ``relay report`` (``relay.cli.report``).

Modules: ``periods`` (ISO weeks, days, months in a time zone), ``model`` (report dataclasses), ``source`` /
``sql`` (grouped ledger queries), ``compute`` (the report from grouped rows), ``headlines`` / ``fmt`` and the
``render_*`` modules, ``chart``, ``config`` (the ``reports:`` section), ``schedule``, ``deliver``, ``service``
(daemon wiring) and ``cli``.
"""
