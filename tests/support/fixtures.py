"""Load the captured Claude Code 2.1.329 OTLP exports in ``tests/fixtures/claude-code/`` for replay.

Each scenario folder holds ``otlp/NNNN-<signal>.{bin,bin.gzip,json}`` bodies exactly as Claude Code sent them,
with a ``.meta.json`` giving path, content type, content encoding and headers (see the folder's README).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude-code"

SCENARIOS = [
    "protobuf-text",
    "protobuf-text-nobeta",
    "protobuf-tools",
    "json-tools",
    "grpc-tools",
    "protobuf-gzip",
    "protobuf-err529",
    "protobuf-subagent",
    "protobuf-receiver-503",
]


@dataclass(frozen=True)
class CapturedRequest:
    """One captured export request: ``body`` is the raw bytes as sent (still gzip-compressed if it was)."""

    scenario: str
    name: str
    signal: str  # traces | metrics | logs
    path: str  # /v1/<signal>
    transport: str  # http | grpc
    content_type: str
    content_encoding: str | None
    headers: dict[str, str]
    body: bytes


#: Claude Code 2.1.332 (the release that added ``gen_ai.usage.*`` to ``llm_request`` spans), same scenario as
#: 2.1.329's ``protobuf-tools``; its folder is ``tests/fixtures/claude-code-2.1.332/``.
SCENARIOS_2_1_332 = ["claude-code-2.1.332/protobuf-tools"]


def load_scenario(scenario: str) -> list[CapturedRequest]:
    """All requests of a scenario in arrival order; a name with a ``/`` is a folder under ``tests/fixtures/``
    (another release's captures, e.g. ``claude-code-2.1.332/protobuf-tools``)."""
    folder = (FIXTURES.parent / scenario if "/" in scenario else FIXTURES / scenario) / "otlp"
    out = []
    for meta_path in sorted(folder.glob("*.meta.json")):
        meta = json.loads(meta_path.read_text())
        stem = meta_path.name[: -len(".meta.json")]
        candidates = [p for p in folder.glob(stem + ".*") if not p.name.endswith(".meta.json")]
        assert len(candidates) == 1, (meta_path, candidates)
        out.append(
            CapturedRequest(
                scenario=scenario,
                name=stem,
                signal=meta["signal"],
                path=meta.get("path") or f"/v1/{meta['signal']}",
                transport=meta.get("transport", "http"),
                content_type=meta.get("content_type") or "application/x-protobuf",
                content_encoding=meta.get("content_encoding"),
                headers={
                    k: ",".join(v) if isinstance(v, list) else str(v) for k, v in (meta.get("headers") or {}).items()
                },
                body=candidates[0].read_bytes(),
            )
        )
    return out
