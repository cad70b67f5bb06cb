"""Langfuse public REST routes of the fake beyond OTLP (contract ``langfuse.md`` §5; reference
https://api.reference.langfuse.com): score configs, the batch (array) form of ``POST /scores``, a prompt get and
a dataset get — installed on :class:`tests.fakes.langfuse.FakeLangfuse` by :func:`install`.

- ``GET /api/public/score-configs?page&limit`` → ``{data, meta:{page, limit, totalItems, totalPages}}``;
  ``POST /api/public/score-configs`` → 200 the config (``id``, ``name``, ``dataType``, ``isArchived``,
  ``minValue``/``maxValue``/``categories``, ``projectId``, ``createdAt``, ``updatedAt``).
- ``POST /api/public/scores`` with a JSON array (newer servers, SDK ≥ 5): 202 ``{"message":"Accepted"}`` when every
  item is valid, else 207 ``{accepted, rejected, errors:[{message}]}``; only when ``FakeLangfuse.score_batches``.
  Scores carrying ``configId`` are checked against the config (name, data type, range, category label).
- ``GET /api/public/v2/prompts/{name}`` and ``GET /api/public/v2/datasets/{name}``: 404 unless created with
  :meth:`RestState.add_prompt` / :meth:`RestState.add_dataset`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["RestState", "install", "config_problem"]

_ISO = "%Y-%m-%dT%H:%M:%S.000Z"


@dataclass
class RestState:
    """Per-project REST data of the fake (thread-safe through ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    configs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    prompts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    datasets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    config_posts: int = 0
    #: config names ``POST /score-configs`` refuses with 400 (to test clients' handling)
    refuse_configs: set[str] = field(default_factory=set)

    def add_prompt(
        self, project: str, name: str, prompt: str, version: int = 1, labels: tuple[str, ...] = ("production",)
    ) -> dict[str, Any]:
        """A text prompt of ``project`` (id) as ``GET /v2/prompts/{name}`` returns it."""
        p = {
            "type": "text",
            "name": name,
            "version": version,
            "prompt": prompt,
            "config": {},
            "labels": list(labels),
            "tags": [],
            "commitMessage": None,
        }
        with self.lock:
            self.prompts[(project, name)] = p
        return p

    def add_dataset(self, project: str, name: str, description: str = "") -> dict[str, Any]:
        """A dataset of ``project`` (id) as ``GET /v2/datasets/{name}`` returns it."""
        now = time.strftime(_ISO, time.gmtime())
        d = {
            "id": str(uuid.uuid4()),
            "name": name,
            "description": description,
            "metadata": None,
            "projectId": project,
            "createdAt": now,
            "updatedAt": now,
        }
        with self.lock:
            self.datasets[(project, name)] = d
        return d

    def configs_of(self, project: str) -> list[dict[str, Any]]:
        """Score configs of ``project`` (id), in creation order."""
        with self.lock:
            return list(self.configs.get(project, []))


def config_problem(state: RestState, project: str, body: dict[str, Any]) -> str | None:
    """Why a score with ``configId`` does not fit its config (upstream ``validateConfigAgainstBody``), or None."""
    cid = body.get("configId")
    if not cid:
        return None
    cfg = next((c for c in state.configs_of(project) if c["id"] == cid), None)
    if cfg is None:
        return f"config {cid} not found"
    if cfg["name"] != body.get("name"):
        return "name mismatch between score and config"
    if body.get("dataType") and body["dataType"] != cfg["dataType"]:
        return "dataType mismatch between score and config"
    value = body.get("value")
    if cfg["dataType"] == "CATEGORICAL":
        labels = [c["label"] for c in cfg.get("categories") or []]
        return None if value in labels else f"value {value!r} is not a category of {cfg['name']}"
    if not isinstance(value, (int, float)):
        return "numeric config needs a numeric value"
    if cfg.get("minValue") is not None and value < cfg["minValue"]:
        return f"value {value} below minValue {cfg['minValue']}"
    if cfg.get("maxValue") is not None and value > cfg["maxValue"]:
        return f"value {value} above maxValue {cfg['maxValue']}"
    return None


def install(fake: Any, app: web.Application) -> None:
    """Add the routes to ``app`` (the fake's application); state lives in ``fake.rest``."""
    if not hasattr(fake, "rest"):
        fake.rest = RestState()

    async def list_configs(request: web.Request) -> web.StreamResponse:
        rec = fake._new_rec(request)
        project, fault, early = await fake._guard(request, rec)
        if early is not None:
            return early
        try:
            page, limit = int(request.query.get("page", 1)), int(request.query.get("limit", 50))
        except ValueError:
            return fake._reply(rec, 400, {"message": "Invalid request data", "error": "InvalidRequestError"})
        items = fake.rest.configs_of(project.id)
        data = items[(page - 1) * limit : page * limit]
        meta = {"page": page, "limit": limit, "totalItems": len(items), "totalPages": max(1, -(-len(items) // limit))}
        return await fake._finish(request, rec, fault, 200, {"data": data, "meta": meta})

    async def create_config(request: web.Request) -> web.StreamResponse:
        rec = fake._new_rec(request)
        project, fault, early = await fake._guard(request, rec)
        if early is not None:
            return early
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or not body.get("name")
            or body.get("dataType") not in ("NUMERIC", "CATEGORICAL", "BOOLEAN", "TEXT")
        ):
            return fake._reply(rec, 400, {"message": "Invalid request data", "error": "InvalidRequestError"})
        if body["name"] in fake.rest.refuse_configs:
            return fake._reply(rec, 400, {"message": f"Invalid name {body['name']!r}", "error": "InvalidRequestError"})
        if body["dataType"] == "CATEGORICAL" and not body.get("categories"):
            return fake._reply(rec, 400, {"message": "categories required", "error": "InvalidRequestError"})
        now = time.strftime(_ISO, time.gmtime())
        cfg = {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "dataType": body["dataType"],
            "isArchived": False,
            "minValue": body.get("minValue"),
            "maxValue": body.get("maxValue"),
            "categories": body.get("categories"),
            "description": body.get("description"),
            "projectId": project.id,
            "createdAt": now,
            "updatedAt": now,
        }
        with fake.rest.lock:
            fake.rest.configs.setdefault(project.id, []).append(cfg)
            fake.rest.config_posts += 1
        return await fake._finish(request, rec, fault, 200, cfg)

    async def get_named(request: web.Request, table: str) -> web.StreamResponse:
        rec = fake._new_rec(request)
        project, fault, early = await fake._guard(request, rec)
        if early is not None:
            return early
        with fake.rest.lock:
            item = getattr(fake.rest, table).get((project.id, request.match_info["name"]))
        if item is None:
            return fake._reply(
                rec, 404, {"message": f"{table[:-1].capitalize()} not found", "error": "LangfuseNotFoundError"}
            )
        return await fake._finish(request, rec, fault, 200, item)

    async def prompt(request: web.Request) -> web.StreamResponse:
        return await get_named(request, "prompts")

    async def dataset(request: web.Request) -> web.StreamResponse:
        return await get_named(request, "datasets")

    app.router.add_route("GET", "/api/public/score-configs", list_configs)
    app.router.add_route("POST", "/api/public/score-configs", create_config)
    app.router.add_route("GET", "/api/public/v2/prompts/{name}", prompt)
    app.router.add_route("GET", "/api/public/v2/datasets/{name}", dataset)
