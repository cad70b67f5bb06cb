"""deploy/ checked with the tools an operator's CI would use, without Docker or a cluster:

- the compose file against the Compose Specification's JSON schema (as vendored by check-jsonschema), and the
  wiring between relay and the Langfuse stack it provisions;
- the Kubernetes manifests against Kubernetes 1.30's strict JSON schemas (kubernetes-validate), probes, image pin,
  per-tenant Secrets and the NetworkPolicy;
- relay's own configs of each deployment through relay's config loader;
- the Prometheus rules with ``promtool check rules`` and ``promtool test rules`` (Debian's ``prometheus`` package;
  skipped without it) and, always, every metric they and the Grafana dashboard query against the names a running
  relay exposes on ``/metrics``;
- the systemd unit against the README's install path.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

import relay
from relay.alerting.rules.load import RuleSet
from relay.config_load import load_config
from tests.support.inproc import running_relay
from tests.support.relay_proc import ROOT

DEPLOY = ROOT / "deploy"
LANGFUSE_STACK = {"langfuse-web", "langfuse-worker", "postgres", "clickhouse", "redis", "minio"}


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def k8s_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` interpolation (https://docs.docker.com/reference/compose-file/interpolation/)."""
    env = env or {}
    return re.sub(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


# ------------------------------------------------------------------------------------------------------- compose


def test_compose_file_is_valid_against_the_compose_spec():
    schema = json.loads(
        (importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json").read_text()
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    doc = compose()
    assert [e.message for e in validator.iter_errors(doc)] == []
    broken = copy.deepcopy(doc)
    broken["services"]["relay"]["helthcheck"] = {}  # the validator does reject a misspelt key
    assert list(validator.iter_errors(broken))


def test_compose_runs_relay_against_the_langfuse_project_it_provisions(tmp_path):
    doc = compose()
    services = doc["services"]
    assert LANGFUSE_STACK | {"relay"} <= set(services)
    web, relay_svc = services["langfuse-web"]["environment"], services["relay"]["environment"]
    # relay's keys are the project keys LANGFUSE_INIT_* creates (defaults and overrides alike)
    for env in ({}, {"LANGFUSE_INIT_PROJECT_PUBLIC_KEY": "pk-lf-x", "LANGFUSE_INIT_PROJECT_SECRET_KEY": "sk-lf-y"}):
        assert interpolate(relay_svc["LANGFUSE_PUBLIC_KEY"], env) == interpolate(
            web["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"], env
        )
        assert interpolate(relay_svc["LANGFUSE_SECRET_KEY"], env) == interpolate(
            web["LANGFUSE_INIT_PROJECT_SECRET_KEY"], env
        )
    for key in ("ORG_ID", "PROJECT_ID", "USER_EMAIL", "USER_PASSWORD"):
        assert interpolate(web[f"LANGFUSE_INIT_{key}"]), key
    assert (
        relay_svc["LANGFUSE_BASE_URL"] == "http://langfuse-web:3000"
        and "3000:3000" in services["langfuse-web"]["ports"]
    )
    # Langfuse web and worker share one environment: the same database, ClickHouse, Redis and S3 settings
    worker = services["langfuse-worker"]["environment"]
    assert all(web[k] == v for k, v in worker.items())
    assert {"DATABASE_URL", "CLICKHOUSE_URL", "REDIS_HOST", "LANGFUSE_S3_EVENT_UPLOAD_BUCKET"} <= set(worker)
    for name in LANGFUSE_STACK - {"langfuse-web", "langfuse-worker"}:
        assert "healthcheck" in services[name], name
    # beyond loopback: relay's receivers, the Langfuse UI and MinIO's upload port only
    for name, svc in services.items():
        for port in svc.get("ports", []):
            if not port.startswith("127.0.0.1:"):
                assert (name, port) in {
                    ("relay", "4318:4318"),
                    ("relay", "4317:4317"),
                    ("langfuse-web", "3000:3000"),
                    ("minio", "9090:9000"),
                }, (name, port)
    assert services["relay"]["image"] == f"relay:{relay.__version__}"
    assert all(
        not s.get("image", "x:1").endswith(":latest") and ":" in s.get("image", "x:1") for s in services.values()
    )
    # relay's receivers listen beyond loopback, so its tenant needs a token: a compose secret, not an env var
    assert doc["secrets"]["relay_tenant_token"] == {"environment": "RELAY_TENANT_TOKEN"}
    assert "relay_tenant_token" in services["relay"]["secrets"]
    assert "RELAY_TENANT_TOKEN" not in relay_svc

    # the mounted config loads with relay's own loader (secret file and environment as in the container)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["relay"]["volumes"] if v.startswith("./")}
    assert services["relay"]["command"][-1] in mounts
    conf = tmp_path / "etc"
    shutil.copytree(DEPLOY / "compose", conf)
    (tmp_path / "token").write_text("compose-tenant-token\n")
    text = (conf / "relay.yaml").read_text().replace("/run/secrets/relay_tenant_token", str(tmp_path / "token"))
    (conf / "relay.yaml").write_text(text.replace("directory: /data", f"directory: {tmp_path / 'data'}"))
    cfg = _load(
        conf / "relay.yaml",
        {
            "LANGFUSE_BASE_URL": relay_svc["LANGFUSE_BASE_URL"],
            "LANGFUSE_PUBLIC_KEY": "pk-lf-relay-dev",
            "LANGFUSE_SECRET_KEY": "sk-lf-relay-dev",
            "RELAY_ADMIN_TOKEN": "compose-admin-token",
        },
    )
    assert cfg.service.admin.auth.token.get_secret_value() == "compose-admin-token"  # required beyond loopback
    [tenant] = cfg.resolved_tenants()
    assert [t.get_secret_value() for t in tenant.tokens] == ["compose-tenant-token"]
    assert tenant.langfuse.enabled and tenant.langfuse.base_url == "http://langfuse-web:3000"
    rules = RuleSet.load(cfg.rules.files, conf)
    assert rules.rules and all(r.model.enforce in (None, "block", "warn") for r in rules.rules if r.kind == "budget")


def _load(path: Path, env: dict[str, str]):
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_config(str(path))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------------- kubernetes


def test_kubernetes_manifests_are_valid_kubernetes_objects():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = k8s_docs("relay.yaml") + k8s_docs("secrets.example.yaml")
    for d in docs:
        kubernetes_validate.validate(d, "1.30.0", strict=True)
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "StatefulSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: a misspelt field is an error
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


def test_kubernetes_probes_image_secrets_and_network_policy(tmp_path):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_docs("relay.yaml")}
    secrets = {d["metadata"]["name"]: d for d in k8s_docs("secrets.example.yaml")}
    sts = docs[("StatefulSet", "relay")]
    pod = sts["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["image"] == f"relay:{relay.__version__}" and c["imagePullPolicy"] == "IfNotPresent"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    # liveness is more patient than readiness: a busy relay is taken out of rotation long before it is killed
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]
    assert (
        docs[("Service", "relay-headless")]["spec"]["clusterIP"] == "None"
        and sts["spec"]["serviceName"] == "relay-headless"
    )
    assert sts["spec"]["replicas"] == 1  # SQLite on a ReadWriteOnce volume: one writer
    assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]

    # the mounted config: what relay listens on matches the container ports; every tenant has a token and keys,
    # read from files of its own Secret
    config_text = docs[("ConfigMap", "relay-config")]["data"]["relay.yaml"]
    config = yaml.safe_load(config_text)
    assert config["service"]["admin"]["endpoint"].endswith(f":{ports['admin']}")
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{ports['otlp-http']}")
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(f":{ports['otlp-grpc']}")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "tenants")["mountPath"]
    projected = next(v for v in pod["volumes"] if v["name"] == "tenants")["projected"]["sources"]
    files = {f"{mount}/{i['path']}": (s["secret"]["name"], i["key"]) for s in projected for i in s["secret"]["items"]}
    referenced = set(re.findall(r"\$\{file:([^}]+)\}", config_text))
    assert referenced == set(files)
    for tenant in config["tenants"]:
        assert f"relay-tenant-{tenant['name']}" in secrets
    for _path, (secret, key) in files.items():
        assert key in secrets[secret]["stringData"], (secret, key)
    admin_ref = next(e for e in c["env"] if e["name"] == "RELAY_ADMIN_TOKEN")["valueFrom"]["secretKeyRef"]
    assert admin_ref["key"] in secrets[admin_ref["name"]]["stringData"]

    # the config loads with relay's loader, secrets as the files Kubernetes mounts
    for path, (secret, key) in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(secrets[secret]["stringData"][key] + "\n")
    local = config_text.replace("/etc/relay/tenants", str(tmp_path / "etc/relay/tenants"))
    (tmp_path / "relay.yaml").write_text(local.replace("directory: /data", f"directory: {tmp_path / 'data'}"))
    admin_token = secrets[admin_ref["name"]]["stringData"][admin_ref["key"]]
    cfg = load_config(str(tmp_path / "relay.yaml"), env={"RELAY_ADMIN_TOKEN": admin_token})
    assert cfg.service.admin.auth.token.get_secret_value() == admin_token  # required beyond loopback
    assert {t.name: bool(t.tokens) and t.langfuse.enabled for t in cfg.resolved_tenants()} == {
        "acme": True,
        "globex": True,
    }

    # NetworkPolicy: OTLP from anywhere (tokens), the admin port only from the monitoring namespace
    np = docs[("NetworkPolicy", "relay")]["spec"]
    assert np["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert set(np["policyTypes"]) == {"Ingress", "Egress"}
    by_port = {p["port"]: rule for rule in np["ingress"] for p in rule["ports"]}
    assert "from" not in by_port[4318] and "from" not in by_port[4317]
    assert by_port[8888]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


# ------------------------------------------------------------------------------------------------------- systemd


def test_systemd_unit_runs_the_binary_the_readme_installs():
    unit = (DEPLOY / "systemd" / "relay.service").read_text()
    keys: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    exec_start = keys["ExecStart"][0].split()
    binary = exec_start[0]
    readme = (ROOT / "README.md").read_text()
    venv = binary.rsplit("/bin/relay", 1)[0]
    assert f"python3 -m venv {venv} && {venv}/bin/pip install" in readme  # the README's install puts it there
    assert exec_start[1:3] == ["run", "--config"]
    assert keys["Type"] == ["exec"] and keys["KillSignal"] == ["SIGTERM"]
    creds = {c.split(":")[0] for c in keys["LoadCredential"]}
    assert {"tenant-token", "langfuse-secret-key"} <= creds
    if shutil.which("systemd-analyze"):
        out = subprocess.run(
            ["systemd-analyze", "verify", str(DEPLOY / "systemd" / "relay.service")], capture_output=True, text=True
        )
        assert "Unknown key" not in out.stderr and "Invalid" not in out.stderr, out.stderr


# ------------------------------------------------------------------------------- Prometheus rules and dashboard

METRIC = re.compile(r"\b(?:relay|otelcol|alertmanager)_[a-z0-9_]+\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("_count", "_sum", "_created"),
    "untyped": ("",),
}


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> set[str]:
    """Every sample name relay's ``/metrics`` can expose, read over HTTP from a running relay (with rules and a
    receiver configured, so the alerting metrics exist too)."""
    import asyncio

    tmp = tmp_path_factory.mktemp("metrics")
    rules = tmp / "rules.yaml"
    rules.write_text("groups: []\n")
    overrides = {
        "rules": {"files": [str(rules)], "watch": False},
        "alerting": {
            "route": {"receiver": "hook"},
            "receivers": [{"name": "hook", "webhook_configs": [{"url": "http://127.0.0.1:9/alerts"}]}],
        },
    }

    async def scrape() -> str:
        async with running_relay(tmp / "data", overrides=overrides) as r:
            return await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{r.admin_port}/metrics", timeout=5).read().decode()
            )

    text = asyncio.run(scrape())
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "counter":  # the TYPE line may already carry the _total suffix
                name = name.removesuffix("_total")
            names.update(name + s for s in _SUFFIXES[kind])
    return names


def unknown_metrics(exprs: list[str], exposed: set[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e) if m not in exposed}


def test_metric_check_catches_a_wrong_name(exposed):
    assert "relay_spool_bytes" in exposed and "relay_hook_decisions_total" in exposed
    assert unknown_metrics(["rate(relay_spool_byte[5m])", "relay_hook_decisions_total"], exposed) == {
        "relay_spool_byte"
    }


def rule_file() -> dict:
    return yaml.safe_load((DEPLOY / "prometheus" / "relay-alerts.yaml").read_text())


def test_prometheus_rules_query_metrics_relay_exposes(exposed):
    rules = [r for g in rule_file()["groups"] for r in g["rules"]]
    assert {"RelayExporterFailing", "RelaySpoolFilling", "RelayDeadLettersGrowing"} <= {r["alert"] for r in rules}
    for r in rules:
        assert r["labels"]["severity"] in ("info", "warning", "critical") and r["annotations"]["summary"], r["alert"]
    assert unknown_metrics([r["expr"] for r in rules], exposed) == set()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_checks_and_unit_tests_the_rules():
    base = DEPLOY / "prometheus"
    check = subprocess.run(
        ["promtool", "check", "rules", str(base / "relay-alerts.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", "tests/relay-alerts_test.yaml"], cwd=base, capture_output=True, text=True
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_grafana_dashboard_is_well_formed_and_queries_metrics_relay_exposes(exposed):
    dash = json.loads((DEPLOY / "grafana" / "relay-dashboard.json").read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    exprs = [variables["tenant"]["definition"]]
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        area = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        exprs += [t["expr"] for t in p["targets"]]
    assert unknown_metrics(exprs, exposed) == set()
    queried = {m for e in exprs for m in METRIC.findall(e)}
    # relay's own health and the usage it records are both on the dashboard
    assert {
        "relay_spool_bytes",
        "otelcol_exporter_sent_spans_total",
        "relay_dead_letter_spans",
        "relay_usage_cost_usd_total",
        "relay_usage_tokens_total",
        "relay_hook_decisions_total",
    } <= queried
