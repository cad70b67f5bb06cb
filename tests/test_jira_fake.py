"""The fake Jira behaves like Jira where relay depends on it (``tests/fakes/jira.py``;
https://developer.atlassian.com/cloud/jira/platform/rest/v3/):
auth per flavour, API versions, the removed search endpoint, create validation, ADF, JQL subset, search lag,
transitions. Plain aiohttp requests, so these tests do not depend on relay's client."""

from __future__ import annotations

import base64

import aiohttp
import pytest

from tests.fakes.jira import GONE_MESSAGE, FakeJira
from tests.fakes.jira_support import Clock

ADF = {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "hi"}]}]}


def basic(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def cloud(clock):
    async with (
        FakeJira("cloud", clock=clock, search_lag=10) as fake,
        aiohttp.ClientSession(headers=basic(fake.user, fake.api_token)) as http,
    ):
        yield fake, http


@pytest.fixture
async def dc(clock):
    async with (
        FakeJira("datacenter", clock=clock) as fake,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {fake.pat}"}) as http,
    ):
        yield fake, http


async def call(http, fake, method, path, body=None, version=None, **kw):
    url = f"{fake.base_url}/rest/api/{version or fake.version}/{path}"
    async with http.request(method, url, json=body, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, (await resp.json(content_type=None)) if text else None
        except ValueError:
            return resp.status, text


def fields(summary="s", **extra):
    return {"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Bug"}, "summary": summary, **extra}}


async def test_auth_per_flavour(cloud, dc):
    fake, _ = cloud
    async with aiohttp.ClientSession() as anon:
        assert (await call(anon, fake, "GET", "myself"))[0] == 401
        assert (await call(anon, fake, "GET", "myself", headers=basic(fake.user, "wrong")))[0] == 401
        bearer = {"Authorization": f"Bearer {fake.api_token}"}
        assert (await call(anon, fake, "GET", "myself", headers=bearer))[0] == 401
        dfake, _ = dc
        assert (await call(anon, dfake, "GET", "myself", headers=basic("relay", dfake.pat)))[0] == 401
        assert (await call(anon, dfake, "GET", "myself", headers={"Authorization": f"Bearer {dfake.pat}"}))[0] == 200


async def test_versions_and_removed_search(cloud, dc):
    fake, http = cloud
    assert (await call(http, fake, "GET", "myself"))[0] == 200
    assert (await call(http, fake, "GET", "myself", version="2"))[0] == 404
    for version in ("2", "3"):
        status, body = await call(http, fake, "POST", "search", {"jql": "project = OPS"}, version=version)
        assert status == 410 and body["errorMessages"] == [GONE_MESSAGE]
    dfake, dhttp = dc
    assert (await call(dhttp, dfake, "GET", "myself", version="3"))[0] == 404
    assert (await call(dhttp, dfake, "POST", "search", {"jql": "project = OPS"}))[0] == 200


async def test_create_validates_like_jira(cloud, dc):
    fake, http = cloud
    status, body = await call(http, fake, "POST", "issue", fields(description="plain text"))
    assert status == 400 and "Atlassian Document" in body["errors"]["description"]
    bad_adf = {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}],
    }
    assert (await call(http, fake, "POST", "issue", fields(description=bad_adf)))[0] == 400
    status, body = await call(http, fake, "POST", "issue", fields(labels=["has space"], priority={"name": "P9"}))
    assert status == 400 and set(body["errors"]) == {"labels", "priority"}
    status, body = await call(
        http, fake, "POST", "issue", {"fields": {"project": {"key": "NOPE"}, "issuetype": {"name": "Bug"}}}
    )
    assert status == 400 and body == {
        "errorMessages": [],
        "errors": {"project": "valid project is required", "summary": "You must specify a summary of the issue."},
    }
    assert (await call(http, fake, "POST", "issue", fields("x" * 256)))[0] == 400
    assert (await call(http, fake, "POST", "issue", fields(customfield_1="x")))[0] == 400
    status, body = await call(http, fake, "POST", "issue", fields(description=ADF, labels=["a"]))
    assert status == 201 and body["key"] == "OPS-1"
    dfake, dhttp = dc
    assert (await call(dhttp, dfake, "POST", "issue", fields(description=ADF)))[0] == 400
    assert (await call(dhttp, dfake, "POST", "issue", fields(description="h2. wiki")))[0] == 201


async def test_search_lag_fields_and_paging_on_cloud(cloud, clock):
    fake, http = cloud
    await call(http, fake, "POST", "issue", fields(labels=["k"]))
    jql = {"jql": 'project = "OPS" AND labels = "k"', "fields": ["labels", "status"]}
    status, body = await call(http, fake, "POST", "search/jql", jql)
    assert status == 200 and body == {"issues": [], "isLast": True}  # just created: not searchable yet
    clock.advance(10)
    status, body = await call(http, fake, "POST", "search/jql", jql)
    assert [i["key"] for i in body["issues"]] == ["OPS-1"] and set(body["issues"][0]["fields"]) == {"labels", "status"}
    _, bare = await call(http, fake, "POST", "search/jql", {"jql": jql["jql"]})
    assert bare["issues"][0]["fields"] == {}  # search/jql returns no fields unless asked
    assert (await call(http, fake, "POST", "search/jql", {"jql": "ORDER BY created"}))[0] == 400  # unbounded
    for i in range(4):
        await call(http, fake, "POST", "issue", fields(f"n{i}", labels=["k"]))
    clock.advance(10)
    keys, token = [], None
    while True:
        _, page = await call(
            http, fake, "POST", "search/jql", {**jql, "maxResults": 2, **({"nextPageToken": token} if token else {})}
        )
        keys += [i["key"] for i in page["issues"]]
        token = page.get("nextPageToken")
        if page["isLast"]:
            break
    assert keys == ["OPS-1", "OPS-2", "OPS-3", "OPS-4", "OPS-5"]


async def test_jql_subset(dc, clock):
    fake, http = dc
    for i in range(3):
        await call(http, fake, "POST", "issue", fields(f"s{i}", labels=["k"], customfield_10050=f"relay-{i}"))
    fake.set_status("OPS-1", "Done", at=clock() - 3 * 86400)
    fake.set_status("OPS-2", "Done", resolution="Won't Fix")

    async def keys(jql):
        status, body = await call(http, fake, "POST", "search", {"jql": jql, "fields": ["status"]})
        assert status == 200, body
        return [i["key"] for i in body["issues"]]

    assert await keys("project = OPS AND statusCategory != Done") == ["OPS-3"]
    assert await keys("project = OPS AND (resolution is EMPTY OR resolutiondate >= -1440m) ORDER BY created DESC") == [
        "OPS-3",
        "OPS-2",
    ]
    assert await keys('project = OPS AND resolution != "Won\'t Fix"') == ["OPS-1"]  # != never matches empty
    assert await keys('project = OPS AND cf[10050] ~ "\\"relay-2\\""') == ["OPS-3"]
    assert await keys('project = OPS AND status in ("Done") ORDER BY resolutiondate DESC') == ["OPS-2", "OPS-1"]
    for bad, message in (
        ("project = NOPE", "does not exist for the field 'project'"),
        ("nosuchfield = 1", "Field 'nosuchfield' does not exist"),
        ('project = OPS AND created >= "yesterday"', "Date value 'yesterday'"),
    ):
        status, body = await call(http, fake, "POST", "search", {"jql": bad})
        assert status == 400 and message in body["errorMessages"][0]


async def test_transitions_and_comments(cloud, clock):
    fake, http = cloud
    await call(http, fake, "POST", "issue", fields())
    _, body = await call(http, fake, "GET", "issue/OPS-1/transitions")
    assert [(t["id"], t["name"], t["to"]["name"]) for t in body["transitions"]] == [
        ("11", "Start Progress", "In Progress"),
        ("31", "Done", "Done"),
    ]
    assert (await call(http, fake, "POST", "issue/OPS-1/transitions", {"transition": {"id": "41"}}))[0] == 400
    assert (
        await call(
            http,
            fake,
            "POST",
            "issue/OPS-1/transitions",
            {"transition": {"id": "31"}, "fields": {"resolution": {"name": "Won't Fix"}}},
        )
    )[0] == 204
    _, issue = await call(http, fake, "GET", "issue/OPS-1", params={"fields": "status,resolution,resolutiondate"})
    assert issue["fields"]["status"]["statusCategory"]["key"] == "done"
    assert issue["fields"]["resolution"]["name"] == "Won't Fix" and issue["fields"]["resolutiondate"]
    assert (await call(http, fake, "POST", "issue/OPS-1/transitions", {"transition": {"id": "41"}}))[0] == 204
    assert fake.issue("OPS-1").resolution is None and fake.issue("OPS-1").status == "To Do"
    assert (await call(http, fake, "POST", "issue/OPS-1/comment", {"body": "plain"}))[0] == 400
    for text in ("one", "two"):
        clock.advance(1)
        doc = {**ADF, "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]}
        assert (await call(http, fake, "POST", "issue/OPS-1/comment", {"body": doc}))[0] == 201
    _, page = await call(http, fake, "GET", "issue/OPS-1/comment", params={"orderBy": "-created", "maxResults": "1"})
    assert page["total"] == 2 and page["comments"][0]["body"]["content"][0]["content"][0]["text"] == "two"
    assert (await call(http, fake, "GET", "issue/OPS-9"))[0] == 404


async def test_faults_and_outage(cloud):
    fake, http = cloud
    fake.rate_limit(retry_after=9)
    async with http.get(f"{fake.base_url}/rest/api/3/myself") as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "9"
    assert (await call(http, fake, "GET", "myself"))[0] == 200
    fake.drop_response(method="POST", path="^issue$")
    with pytest.raises(aiohttp.ClientError):
        await call(http, fake, "POST", "issue", fields())
    assert [i.key for i in fake.issues()] == ["OPS-1"]  # it took effect
    await fake.outage()
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(http, fake, "GET", "myself")
    await fake.restore()
    assert (await call(http, fake, "GET", "myself"))[0] == 200


def test_run_in_thread():
    with FakeJira.run_in_thread("datacenter") as fake:
        assert fake.base_url.startswith("http://127.0.0.1:") and fake.issues() == []


async def test_a_transition_sets_only_fields_on_its_screen(cloud):
    """Real Jira answers 400 when a transition sets a field that is not on its screen (e.g. a resolution on a
    transition without the Resolution field); ``expand=transitions.fields`` shows each screen's fields."""
    fake, http = cloud
    _, created = await call(http, fake, "POST", "issue", fields())
    key = created["key"]
    _, page = await call(http, fake, "GET", f"issue/{key}/transitions", params={"expand": "transitions.fields"})
    screens = {t["name"]: t["fields"] for t in page["transitions"]}
    assert screens["Start Progress"] == {} and "resolution" in screens["Done"]
    assert {v["name"] for v in screens["Done"]["resolution"]["allowedValues"]} >= {"Done", "Won't Fix"}
    _, plain = await call(http, fake, "GET", f"issue/{key}/transitions")
    assert all("fields" not in t for t in plain["transitions"])  # only with the expand
    status, body = await call(
        http,
        fake,
        "POST",
        f"issue/{key}/transitions",
        {"transition": {"id": "11"}, "fields": {"resolution": {"name": "Done"}}},
    )
    assert (
        status == 400
        and "resolution" in body["errors"]
        and "not on the appropriate screen" in body["errors"]["resolution"]
    )
    assert fake.issue(key).status == "To Do" and not fake.transitions_applied(key)
    status, _ = await call(
        http,
        fake,
        "POST",
        f"issue/{key}/transitions",
        {"transition": {"id": "31"}, "fields": {"resolution": {"name": "Won't Fix"}}},
    )
    assert status == 204 and fake.issue(key).resolution == "Won't Fix"


async def test_a_done_transition_without_a_screen_rejects_a_resolution(clock):
    async with (
        FakeJira("datacenter", clock=clock, transition_fields={}) as fake,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {fake.pat}"}) as http,
    ):
        _, created = await call(http, fake, "POST", "issue", fields())
        status, body = await call(
            http,
            fake,
            "POST",
            f"issue/{created['key']}/transitions",
            {"transition": {"id": "31"}, "fields": {"resolution": {"name": "Done"}}},
        )
        assert status == 400 and "resolution" in body["errors"]
        status, _ = await call(http, fake, "POST", f"issue/{created['key']}/transitions", {"transition": {"id": "31"}})
        assert status == 204 and fake.issue(created["key"]).resolution == "Done"  # Jira's own default
