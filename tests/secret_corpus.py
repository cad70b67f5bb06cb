"""A corpus of realistic (randomly generated, never real) secrets in the formats the redaction must catch, each
embedded in the text around it the way it shows up in agent telemetry (commands, config files, JSON, logs).

``CORPUS`` is a list of :class:`Sample`: ``kind`` (format), ``text`` (what is sent) and ``secret`` (the part that
must not survive). Generated deterministically from a seed so failures are reproducible.
"""

from __future__ import annotations

import base64
import random
import string
from dataclasses import dataclass

__all__ = ["Sample", "CORPUS"]

_rnd = random.Random(20261206)
_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"
_URLSAFE = _ALNUM + "_-"


def _r(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(_rnd.choice(alphabet) for _ in range(n))


def _hex(n: int) -> str:
    return _r(n, "0123456789abcdef")


def _upper(n: int) -> str:
    return _r(n, string.ascii_uppercase + "234567")


def _pem(kind: str, lines: int = 6) -> str:
    body = "\n".join(_r(64, _B64) for _ in range(lines))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"


def _jwt() -> str:
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(b'{"sub":"1234567890","name":"Ann Smith","iat":1716239022}').decode().rstrip("=")
    return f"{head}.{payload}.{_r(43, _URLSAFE)}"


@dataclass(frozen=True)
class Sample:
    """One secret in context."""

    kind: str
    text: str
    secret: str


def _build() -> list[Sample]:
    s: list[Sample] = []

    def add(kind: str, template: str, secret: str) -> None:
        s.append(Sample(kind, template.format(secret=secret), secret))

    # cloud
    add("aws-access-key-id", "export AWS_ACCESS_KEY_ID={secret}", "AKIA" + _upper(16))
    add("aws-access-key-id", '{{"AccessKeyId": "{secret}", "Expiration": "2026-12-06T18:00:00Z"}}', "ASIA" + _upper(16))
    add("aws-secret-access-key", "aws_secret_access_key = {secret}", _r(40, _B64))
    add("aws-secret-access-key", '{{"SecretAccessKey": "{secret}"}}', _r(40, _B64))
    add(
        "gcp-api-key",
        "curl 'https://maps.googleapis.com/maps/api/geocode/json?key={secret}'",
        "AIza" + _r(35, _URLSAFE),
    )
    pem = _pem("")
    add("gcp-service-account", '{{"type": "service_account", "private_key": "{secret}"}}', pem.replace("\n", "\\n"))
    add("gcp-service-account-key-id", '{{"type": "service_account", "private_key_id": "{secret}"}}', _hex(40))
    add(
        "azure-storage",
        "DefaultEndpointsProtocol=https;AccountName=acmelogs;AccountKey={secret};EndpointSuffix=core.windows.net",
        _r(86, _B64) + "==",
    )
    add(
        "azure-service-bus",
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey={secret}",
        _r(43, _B64) + "=",
    )
    # LLM vendors
    add("openai-legacy", "OPENAI_API_KEY={secret}", "sk-" + _r(20) + "T3BlbkFJ" + _r(20))
    add(
        "openai-project",
        'client = OpenAI(api_key="{secret}")',
        "sk-proj-" + _r(74, _URLSAFE) + "T3BlbkFJ" + _r(74, _URLSAFE),
    )
    add("openai-project-short", "using {secret} for the eval run", "sk-proj-" + _r(48, _URLSAFE))
    add("anthropic", "ANTHROPIC_API_KEY={secret} claude -p 'fix it'", "sk-ant-api03-" + _r(93, _URLSAFE) + "AA")
    add("anthropic-admin", "x-api-key: {secret}", "sk-ant-admin01-" + _r(93, _URLSAFE) + "AA")
    add("langfuse-secret", "LANGFUSE_SECRET_KEY={secret}", "sk-lf-" + "-".join(_hex(n) for n in (8, 4, 4, 4, 12)))
    add(
        "langfuse-secret",
        "Langfuse(secret_key='{secret}', host='https://cloud.langfuse.com')",
        "sk-lf-" + "-".join(_hex(n) for n in (8, 4, 4, 4, 12)),
    )
    # VCS and registries
    add("github-classic", "git clone https://x:{secret}@github.com/acme/infra.git", "ghp_" + _r(36))
    add("github-classic", "GITHUB_TOKEN={secret}", "ghp_" + _r(36))
    add("github-oauth", "gh auth status: token {secret}", "gho_" + _r(36))
    add("github-fine-grained", "token: {secret}", "github_pat_" + _r(22) + "_" + _r(59))
    add(
        "gitlab",
        "curl --header 'PRIVATE-TOKEN: {secret}' https://gitlab.example.com/api/v4/projects",
        "glpat-" + _r(20, _URLSAFE),
    )
    add("npm", "//registry.npmjs.org/:_authToken={secret}", "npm_" + _r(36))
    add("pypi", "[pypi]\n  username = __token__\n  password = {secret}", "pypi-AgEIcHlwaS5vcmc" + _r(70, _URLSAFE))
    # chat and payments
    add("slack-bot", "SLACK_BOT_TOKEN={secret}", f"xoxb-{_r(11, string.digits)}-{_r(12, string.digits)}-{_r(24)}")
    add(
        "slack-user",
        "slack.WebClient(token='{secret}')",
        f"xoxp-{_r(11, string.digits)}-{_r(11, string.digits)}-{_r(12, string.digits)}-{_hex(32)}",
    )
    add(
        "slack-webhook",
        "POST {secret} with the alert",
        "https://hooks.slack.com/services/T" + _upper(8) + "/B" + _upper(10) + "/" + _r(24),
    )
    add("stripe-live", 'stripe.api_key = "{secret}"', "sk_live_" + _r(99))
    add("stripe-restricted", "STRIPE_KEY: {secret}", "rk_live_" + _r(24))
    # tokens in transit
    add("jwt", "cookie: session={secret}; Path=/", _jwt())
    add("jwt", '{{"id_token": "{secret}"}}', _jwt())
    add("bearer-header", "Authorization: Bearer {secret}", _r(40, _URLSAFE))
    add("bearer-curl", 'curl -H "Authorization: Bearer {secret}" https://api.internal/v1/me', _r(32, _URLSAFE) + "9")
    add("bearer-log", "request headers={{'Authorization': 'Bearer {secret}'}}", _r(48, _URLSAFE) + "1")
    add("basic-header", "Authorization: Basic {secret}", base64.b64encode(b"deploy:" + _r(16).encode()).decode())
    add("basic-inline", "sent Basic {secret} to the proxy", base64.b64encode(b"ci-bot:" + _r(20).encode()).decode())
    # private keys
    add("pem-rsa", "{secret}", _pem("RSA "))
    add("pem-ec", "cat ~/.ssh/key.pem\n{secret}\n", _pem("EC "))
    add("pem-openssh", "{secret}", _pem("OPENSSH "))
    # URLs with passwords
    add("url-postgres", "DATABASE_URL=postgres://app:{secret}@db.internal:5432/app", _r(18))
    add("url-mysql", "mysql://root:{secret}@127.0.0.1:3306/prod", _r(12) + "!x")
    add("url-mongodb", "mongodb+srv://svc:{secret}@cluster0.abcde.mongodb.net/", _r(24))
    add("url-redis", "REDIS_URL=redis://:{secret}@cache:6379/0", _r(20))
    add("url-https", "pip install --index-url https://ci:{secret}@pypi.internal/simple pkg", _r(30))
    # assignments
    add("assign-kv", "password={secret}", "hunter2-" + _r(8))
    add("assign-kv", 'DB_PASSWORD="{secret}" ./run.sh', _r(16))
    add("assign-colon", "api_key: {secret}", _r(32))
    add("assign-colon", "  client_secret: {secret}\n  client_id: acme-web", _r(40, _URLSAFE))
    add("assign-json", '{{"username": "svc", "password": "{secret}"}}', _r(14) + "#1")
    add("assign-json", '{{"secret": "{secret}", "region": "eu-west-1"}}', _r(28))
    add("assign-json", '{{"accessToken": "{secret}"}}', _r(36, _URLSAFE))
    add("assign-python", "SECRET_KEY = '{secret}'", _r(50, _ALNUM + "!@#%^*"))
    add("assign-shell", "export VAULT_TOKEN={secret}", "hvs." + _r(90, _URLSAFE))
    add("assign-env", "PASSWD={secret} make deploy", _r(12))
    return s


CORPUS: list[Sample] = _build()
