"""The fake Langfuse's REST routes added for scores (``tests/fakes/langfuse_rest.py``), checked with the real SDK's
REST client (``langfuse.api.AsyncLangfuseAPI``): its pydantic models validate every response shape."""

from __future__ import annotations

import pytest

from tests.fakes.langfuse import FakeLangfuse


async def test_score_configs_scores_prompts_and_datasets_through_the_sdk_client():
    from langfuse.api import AsyncLangfuseAPI
    from langfuse.api.core.api_error import ApiError

    async with FakeLangfuse() as lf:
        lf.score_batches = True  # a newer server: the SDK's array form
        lf.rest.add_prompt("project-test", "greeting", "Hello {{name}}", version=4)
        lf.rest.add_dataset("project-test", "golden")
        api = AsyncLangfuseAPI(base_url=lf.base_url, username="pk-lf-test", password="sk-lf-test")
        from langfuse.api import ConfigCategory

        cfg = await api.score_configs.create(
            name="tone",
            data_type="CATEGORICAL",
            categories=[ConfigCategory(label="ok", value=1), ConfigCategory(label="rude", value=0)],
        )
        listed = await api.score_configs.get(page=1, limit=50)
        assert [c.id for c in listed.data] == [cfg.id] and listed.meta.total_items == 1
        ok = await api.scores.create(request=[{"name": "tone", "value": "ok", "traceId": "t1", "configId": cfg.id}])
        assert getattr(ok, "message", None) == "Accepted"
        mixed = await api.scores.create(
            request=[
                {"name": "tone", "value": "polite", "traceId": "t1", "configId": cfg.id},  # not a category
                {"name": "x", "value": 1, "traceId": "t1"},
            ]
        )
        assert mixed.accepted == 1 and mixed.rejected == 1 and "category" in mixed.errors[0].message
        assert [s["name"] for s in lf.scores()] == ["tone", "x"]
        prompt = await api.prompts.get("greeting")
        assert prompt.version == 4 and prompt.prompt == "Hello {{name}}"
        assert (await api.datasets.get("golden")).name == "golden"
        with pytest.raises(ApiError) as e:
            await api.prompts.get("missing")
        assert e.value.status_code == 404
        bad = AsyncLangfuseAPI(base_url=lf.base_url, username="pk-lf-test", password="nope")
        with pytest.raises(ApiError) as e:
            await bad.score_configs.get()
        assert e.value.status_code == 401

        # a v4.16 server (the default) refuses the array form
        lf.score_batches = False
        with pytest.raises(ApiError) as e:
            await api.scores.create(request=[{"name": "x", "value": 1, "traceId": "t1"}])
        assert e.value.status_code == 400
