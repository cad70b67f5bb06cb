"""``relay hook claude-code``: Claude Code's command hook for relay's budget enforcement.

Claude Code runs it before each prompt (``UserPromptSubmit``) and tool call (``PreToolUse``) with the hook input
JSON on stdin (https://code.claude.com/docs/en/hooks). It forwards that input to relay's
``POST /hooks/claude-code`` (``relay.hooks.claude_code``) with the agent's ``OTEL_RESOURCE_ATTRIBUTES`` and turns
the answer into Claude Code's command-hook contract:

- **exit 2**, the reason on stderr: blocked (an ``enforce: block`` budget is spent). For ``UserPromptSubmit`` the
  prompt never reaches the model and the user sees the reason; for ``PreToolUse`` the tool does not run and
  Claude sees the reason.
- **exit 0**, relay's JSON decision on stdout: let through (``{}``), or with a warning (``systemMessage``).
- **exit 1**, one line on stderr: relay was unreachable, slow (``--timeout``) or answered an error — the call is
  let through (**fails open**: a budget check must never stop work because relay is down). Claude Code shows the
  line as a hook error; the failure is counted in a state file and reported to relay with the next successful
  call (``relay_hook_fail_open_total``).

Configuration, from the environment Claude Code gives its hooks. **Claude Code removes every ``OTEL_*`` variable
from it** (observed with Claude Code 2.1), so the hook has its own variables (set them in ``settings.json``'s
``env``), and falls back to the ``OTEL_*`` ones only for other callers:

- where relay is: ``--url`` / ``RELAY_HOOK_URL`` (``http://relay:4318/hooks/claude-code``), else
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/hooks/claude-code``;
- credentials: ``RELAY_HOOK_TOKEN`` (the tenant token), else the ``Authorization`` entry of
  ``OTEL_EXPORTER_OTLP_HEADERS``;
- who is asking: ``RELAY_HOOK_RESOURCE_ATTRIBUTES``, else ``OTEL_RESOURCE_ATTRIBUTES`` — the same
  ``enduser.id=…,team.id=…`` the agent's telemetry carries (without either, relay goes by the session's telemetry);
- failure count: ``$XDG_STATE_HOME/relay/hook-failures`` (default ``~/.local/state/relay/``).

Standard library only: it runs before every prompt, so it starts in tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = [
    "main",
    "add_subparser",
    "resolve_url",
    "resolve_authorization",
    "EXIT_ALLOW",
    "EXIT_BLOCK",
    "EXIT_FAIL_OPEN",
]

EXIT_ALLOW = 0
EXIT_FAIL_OPEN = 1
EXIT_BLOCK = 2
HOOK_PATH = "/hooks/claude-code"
DEFAULT_TIMEOUT = 1.0
_FAILURES_FILE = "hook-failures"


def resolve_url(explicit: str | None, env: dict[str, str]) -> str | None:
    """The hook endpoint: ``explicit`` (``--url``), ``RELAY_HOOK_URL``, else the OTLP/HTTP endpoint of
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/hooks/claude-code`` (None when it is unset or Claude Code exports over
    gRPC, whose port does not serve HTTP)."""
    url = explicit or env.get("RELAY_HOOK_URL")
    if url:
        return url
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not base or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip().lower() == "grpc":
        return None
    return base.rstrip("/") + HOOK_PATH


def resolve_authorization(env: dict[str, str]) -> str | None:
    """The ``Authorization`` header value: ``Bearer $RELAY_HOOK_TOKEN``, else the ``Authorization`` entry of
    ``OTEL_EXPORTER_OTLP_HEADERS`` (``key=value`` pairs, comma-separated, values percent-encoded — the
    OpenTelemetry exporter format, https://opentelemetry.io/docs/specs/otel/protocol/exporter/)."""
    token = env.get("RELAY_HOOK_TOKEN")
    if token:
        return f"Bearer {token}"
    for pair in env.get("OTEL_EXPORTER_OTLP_HEADERS", "").split(","):
        key, eq, value = pair.partition("=")
        if eq and key.strip().lower() == "authorization":
            return urllib.parse.unquote(value.strip())
    return None


def _state_dir(env: dict[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return Path(base) / "relay"


def _add_failures(path: Path, n: int) -> None:
    """Add ``n`` failures to the count (one byte each, appended: concurrent hooks never lose one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(b"x" * n)
    except OSError:
        pass


def _claim_failures(path: Path) -> tuple[Path | None, int]:
    """Take the failure count for reporting: the file is renamed away (so failures added meanwhile start a new
    count) and its size returned."""
    claimed = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        os.replace(path, claimed)
        return claimed, claimed.stat().st_size
    except OSError:
        return None, 0


def run_hook(agent: str, stdin: bytes, env: dict[str, str], *, url: str | None, timeout: float) -> tuple[int, str, str]:
    """One hook call: returns ``(exit code, stdout, stderr)`` (see the module docstring). Never raises."""
    endpoint = resolve_url(url, env)
    if endpoint is None:
        return (
            EXIT_FAIL_OPEN,
            "",
            (
                "relay hook: no relay to ask (set RELAY_HOOK_URL or OTEL_EXPORTER_OTLP_ENDPOINT "
                "to relay's OTLP/HTTP endpoint); letting this through\n"
            ),
        )
    try:
        hook_input = json.loads(stdin)
        if not isinstance(hook_input, dict):
            raise ValueError
    except ValueError:
        return (
            EXIT_FAIL_OPEN,
            "",
            f"relay hook: the {agent} hook input on stdin is not a JSON object; letting this through\n",
        )
    state = _state_dir(env) / _FAILURES_FILE
    claimed, failures = _claim_failures(state)
    headers = {"Content-Type": "application/json", "User-Agent": "relay-hook"}
    auth = resolve_authorization(env)
    if auth:
        headers["Authorization"] = auth
    attributes = env.get("RELAY_HOOK_RESOURCE_ATTRIBUTES") or env.get("OTEL_RESOURCE_ATTRIBUTES")
    if attributes:
        headers["X-Relay-Resource-Attributes"] = attributes
    if failures:
        headers["X-Relay-Hook-Failures"] = str(failures)
    problem = None
    try:
        req = urllib.request.Request(endpoint, data=stdin, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read() or b"{}")
        if not isinstance(answer, dict):
            raise ValueError("the answer is not a JSON object")
    except urllib.error.HTTPError as e:
        problem = f"relay answered {e.code}: {_error_text(e)}"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        problem = "timed out" if "timed out" in str(reason) else f"unreachable ({reason})"
    except ValueError as e:
        problem = f"unreadable answer ({e})"
    if claimed is not None:
        try:
            claimed.unlink()
        except OSError:
            pass
    if problem is not None:
        _add_failures(state, failures + 1)
        return (
            EXIT_FAIL_OPEN,
            "",
            (f"relay hook: budget check failed open — relay at {endpoint} {problem}; letting this through\n"),
        )
    reason = _block_reason(answer)
    if reason is not None:
        return EXIT_BLOCK, "", reason + "\n"
    return EXIT_ALLOW, json.dumps(answer), ""


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read() or b"{}")
        return str(body.get("error") or e.reason)[:300]
    except (ValueError, AttributeError, OSError):
        return str(e.reason)[:300]


def _block_reason(answer: dict) -> str | None:
    """The reason of a blocking answer (``decision: block``, or a ``PreToolUse`` ``permissionDecision: deny``)."""
    if answer.get("decision") == "block":
        return str(answer.get("reason") or "blocked by relay")
    specific = answer.get("hookSpecificOutput")
    if isinstance(specific, dict) and specific.get("permissionDecision") == "deny":
        return str(specific.get("permissionDecisionReason") or "blocked by relay")
    return None


def add_subparser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``relay hook claude-code [--url URL] [--timeout S]`` (for ``relay --help``; :func:`main` runs it)."""
    p = sub.add_parser("hook", help="agent hook: ask relay whether a budget stops this prompt or tool call")
    p.add_argument("agent", choices=["claude-code"], help="the agent whose hook contract to speak")
    p.add_argument(
        "--url",
        default=None,
        help="relay's hook endpoint (default: RELAY_HOOK_URL, else OTEL_EXPORTER_OTLP_ENDPOINT + /hooks/claude-code)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"seconds to wait for relay before letting the call through (default: RELAY_HOOK_TIMEOUT or "
        f"{DEFAULT_TIMEOUT})",
    )
    p.set_defaults(fn=lambda args: _run(args))
    return p


def _run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    timeout = args.timeout
    if timeout is None:
        try:
            timeout = float(env.get("RELAY_HOOK_TIMEOUT") or DEFAULT_TIMEOUT)
        except ValueError:
            timeout = DEFAULT_TIMEOUT
    code, out, err = run_hook(args.agent, sys.stdin.buffer.read(), env, url=args.url, timeout=timeout)
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    return code


def main(argv: list[str]) -> int:
    """``relay hook …`` without loading the rest of relay (``argv`` after ``hook``)."""
    parser = argparse.ArgumentParser(prog="relay")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    return _run(parser.parse_args(["hook", *argv]))
