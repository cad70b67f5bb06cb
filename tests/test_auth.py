"""Tests of relay.auth.TenantResolver: the AuthConfig rules (default tenant, trusted tenant header, Bearer
tokens, Basic auth with a token or Langfuse keys)."""

from __future__ import annotations

import base64

import pytest

from relay.auth import TenantResolver, Unauthorized
from relay.config_load import RelayConfig


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(**auth) -> RelayConfig:
    return RelayConfig.model_validate(
        {
            "auth": auth,
            "tenants": [
                {
                    "name": "acme",
                    "tokens": ["acme-token-1", "acme-token-2"],
                    "langfuse": {
                        "base_url": "https://lf.example",
                        "public_key": "pk-lf-acme",
                        "secret_key": "sk-lf-acme",
                    },
                },
                {"name": "beta", "tokens": ["beta-token"]},
                {
                    "name": "lf-only",
                    "langfuse": {
                        "base_url": "https://lf.example",
                        "public_key": "pk-lf-only",
                        "secret_key": "sk-lf-only",
                    },
                },
            ],
        }
    )


def test_no_tokens_means_default_tenant():
    r = TenantResolver(RelayConfig())
    assert not r.auth_required
    assert r.resolve({}) == "default"
    assert r.resolve({"Authorization": "Bearer whatever", "X-Relay-Tenant": "acme"}) == "default"
    r = TenantResolver(RelayConfig.model_validate({"auth": {"default_tenant": "solo"}}))
    assert r.resolve({}) == "solo"


def test_trusted_tenant_header_without_tokens_needs_trusted_proxies():
    with pytest.raises(ValueError, match="auth.trusted_proxies"):
        RelayConfig.model_validate(
            {
                "auth": {"tenant_header": "X-Relay-Tenant", "trust_tenant_header": True},
                "tenants": [{"name": "default"}, {"name": "acme"}],
            }
        )
    cfg = RelayConfig.model_validate(
        {
            "auth": {
                "tenant_header": "X-Relay-Tenant",
                "trust_tenant_header": True,
                "trusted_proxies": ["10.1.0.0/16", "::1"],
            },
            "tenants": [{"name": "default"}, {"name": "acme"}],
        }
    )
    r = TenantResolver(cfg)
    assert r.resolve({"X-Relay-Tenant": "acme"}, "10.1.2.3") == "acme"
    assert r.resolve({"x-relay-tenant": "acme"}, "::1") == "acme"  # gRPC metadata is lower-case
    assert r.resolve({"x-relay-tenant": "acme"}, "::ffff:10.1.0.9") == "acme"  # v4-mapped peer
    assert r.resolve({}, "192.0.2.1") == "default"
    with pytest.raises(Unauthorized, match="unknown tenant"):
        r.resolve({"X-Relay-Tenant": "nobody"}, "10.1.2.3")
    for peer in ("192.0.2.1", "10.2.0.1", None, "garbage"):
        with pytest.raises(Unauthorized, match="trusted_proxies"):
            r.resolve({"X-Relay-Tenant": "acme"}, peer)
    # not trusted → ignored
    untrusted_auth = cfg.auth.model_copy(update={"trust_tenant_header": False})
    untrusted = TenantResolver(cfg.model_copy(update={"auth": untrusted_auth}))
    assert untrusted.resolve({"X-Relay-Tenant": "acme"}) == "default"


def test_bearer_tokens_select_the_tenant():
    r = TenantResolver(_config())
    assert r.auth_required
    assert r.resolve({"Authorization": "Bearer acme-token-1"}) == "acme"
    assert r.resolve({"authorization": "bearer acme-token-2"}) == "acme"
    assert r.resolve({"AUTHORIZATION": "Bearer   beta-token "}) == "beta"


@pytest.mark.parametrize(
    "headers,match",
    [
        ({}, "missing credentials"),
        ({"Authorization": ""}, "missing credentials"),
        ({"Authorization": "Bearer nope"}, "invalid credentials"),
        ({"Authorization": "Bearer acme-token"}, "invalid credentials"),  # prefix of a real token
        ({"Authorization": "Bearer"}, "unsupported"),
        ({"Authorization": "Token acme-token-1"}, "unsupported"),
        ({"Authorization": "Basic !!!"}, "malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, "malformed"),
        ({"Authorization": _basic("pk-lf-acme", "wrong")}, "invalid credentials"),
        ({"Authorization": _basic("pk-lf-acme", "sk-lf-only")}, "invalid credentials"),
    ],
)
def test_rejections(headers, match):
    r = TenantResolver(_config())
    with pytest.raises(Unauthorized, match=match) as e:
        r.resolve(headers)
    assert "acme-token" not in e.value.message and "sk-lf" not in e.value.message


def test_basic_auth():
    r = TenantResolver(_config())
    # Langfuse SDKs send public_key:secret_key
    assert r.resolve({"Authorization": _basic("pk-lf-acme", "sk-lf-acme")}) == "acme"
    assert r.resolve({"Authorization": _basic("pk-lf-only", "sk-lf-only")}) == "lf-only"
    # password is a relay token, username is anything
    assert r.resolve({"Authorization": _basic("anyone", "beta-token")}) == "beta"


def test_tenant_header_must_agree_with_credentials():
    r = TenantResolver(_config(tenant_header="X-Relay-Tenant", trust_tenant_header=True))
    assert r.resolve({"Authorization": "Bearer acme-token-1", "X-Relay-Tenant": "acme"}) == "acme"
    with pytest.raises(Unauthorized, match="do not belong"):
        r.resolve({"Authorization": "Bearer acme-token-1", "X-Relay-Tenant": "beta"})
    with pytest.raises(Unauthorized, match="missing credentials"):
        r.resolve({"X-Relay-Tenant": "acme"})
    # untrusted header is ignored entirely
    r2 = TenantResolver(_config(tenant_header="X-Relay-Tenant", trust_tenant_header=False))
    assert r2.resolve({"Authorization": "Bearer acme-token-1", "X-Relay-Tenant": "beta"}) == "acme"
