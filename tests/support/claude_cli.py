"""The real Claude Code CLI for end-to-end tests: ``$RELAY_TEST_CLAUDE`` when set, else the npm package
``@anthropic-ai/claude-code`` installed once into ``.cache/claude-code/`` (git-ignored) with npm. Tests skip, saying
why, when npm is absent or the install fails (no registry)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.relay_proc import ROOT

__all__ = ["claude_binary", "claude_env"]

CACHE = ROOT / ".cache" / "claude-code"
PACKAGE = os.environ.get("RELAY_TEST_CLAUDE_PACKAGE", "@anthropic-ai/claude-code")


def claude_binary() -> str:
    """Path of a working ``claude`` executable (installing it on first use); ``pytest.skip`` when there is none."""
    explicit = os.environ.get("RELAY_TEST_CLAUDE")
    path = Path(explicit) if explicit else CACHE / "node_modules" / ".bin" / "claude"
    if not path.exists() and not explicit:
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("the real Claude Code CLI is needed: npm is not installed (or set RELAY_TEST_CLAUDE)")
        CACHE.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--silent", PACKAGE],
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {PACKAGE} took over 10 minutes")
        if done.returncode != 0 or not path.exists():
            pytest.skip(f"npm install {PACKAGE} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    try:
        version = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"{path} does not run: {e}")
    if version.returncode != 0:
        pytest.skip(f"{path} --version failed: {version.stderr.strip()[-300:]}")
    return str(path)


def claude_env(home: Path, anthropic_url: str, **extra: str) -> dict[str, str]:
    """A clean environment for ``claude -p``: a private HOME (no login, no settings), the Anthropic stand-in as the
    API (a dummy key), no auto-update or error reporting, plus ``extra``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": anthropic_url,
        "ANTHROPIC_API_KEY": "sk-ant-dummy",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        **extra,
    }
