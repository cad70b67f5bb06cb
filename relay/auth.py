"""Tenant resolution and authentication of OTLP requests (HTTP headers or gRPC metadata).

Rules (``relay.config.AuthConfig``):

- **No tokens configured** on any tenant: authentication is off. A request belongs to ``auth.default_tenant``,
  or — when ``auth.trust_tenant_header`` is true — to the configured tenant named by ``auth.tenant_header``
  (e.g. ``X-Relay-Tenant``, set by a trusted proxy). Credentials that may be present are ignored.
- **Tokens configured**: the request must authenticate, else :class:`Unauthorized` (HTTP 401 /
  gRPC UNAUTHENTICATED, nothing stored):

  * ``Authorization: Bearer <token>`` → the tenant owning the token;
  * ``Authorization: Basic base64(user:password)`` (Langfuse SDKs send ``public_key:secret_key``) → the
    tenant owning ``password`` as a token, or the tenant whose Langfuse public key is ``user`` and secret
    key is ``password``.

  With ``trust_tenant_header``, a tenant header naming a *different* tenant than the credentials is refused.

- ``auth.trusted_proxies`` (CIDRs): when set, the tenant header is only accepted from a peer address inside
  them; the same header from any other peer is refused (without tokens, the configuration requires them).

All secret comparisons use :func:`hmac.compare_digest` and visit every candidate (no early exit), header
names are case-insensitive (gRPC metadata keys arrive lower-case), and secrets never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING

from relay.config_security import parse_cidrs

if TYPE_CHECKING:
    from relay.config_load import RelayConfig

__all__ = ["Unauthorized", "TenantResolver", "grpc_peer_host"]


class Unauthorized(Exception):
    """The request lacks valid credentials. ``message`` is English and safe to return to the client (it never
    contains a secret)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class TenantResolver:
    """Maps request headers to a tenant name according to ``config.auth`` and ``config.tenants``.

    Built once from the configuration (tokens are copied as bytes); cheap to call per request.
    """

    def __init__(self, config: RelayConfig):
        auth = config.auth
        tenants = config.resolved_tenants()
        self._default = auth.default_tenant
        self._tenant_header = auth.tenant_header.lower() if (auth.tenant_header and auth.trust_tenant_header) else None
        self._names = frozenset(t.name for t in tenants)
        self._proxies = parse_cidrs(auth.trusted_proxies)
        self._tokens: list[tuple[bytes, str]] = [
            (tok.get_secret_value().encode(), t.name) for t in config.tenants for tok in t.tokens
        ]
        self._keys: list[tuple[bytes, bytes, str]] = [
            (
                t.langfuse.public_key.get_secret_value().encode(),
                t.langfuse.secret_key.get_secret_value().encode(),
                t.name,
            )
            for t in tenants
            if t.langfuse.public_key and t.langfuse.secret_key
        ]

    @property
    def auth_required(self) -> bool:
        """True when at least one tenant has a token, i.e. every request must authenticate."""
        return bool(self._tokens)

    def resolve(self, headers: Mapping[str, str], peer: str | None = None) -> str:
        """Return the tenant name for a request with ``headers`` (any mapping; names case-insensitive) from the
        peer address ``peer`` (an IP address string; None when unknown).

        Raises :class:`Unauthorized` when credentials are required and missing or wrong, when a trusted
        tenant header names an unknown tenant, contradicts the credentials, or comes from a peer outside
        ``auth.trusted_proxies``.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        named = lower.get(self._tenant_header) if self._tenant_header else None
        if named is not None and self._proxies and not self._trusted(peer):
            raise Unauthorized(f"the {self._tenant_header} header is only accepted from auth.trusted_proxies")
        if named is not None:
            named = named.strip()
            if named not in self._names:
                raise Unauthorized(f"unknown tenant {named[:64]!r} in the {self._tenant_header} header")
        if not self._tokens:
            return named or self._default
        tenant = self._from_credentials(lower.get("authorization"))
        if named and named != tenant:
            raise Unauthorized(f"the credentials do not belong to tenant {named!r}")
        return tenant

    def _trusted(self, peer: str | None) -> bool:
        if not peer:
            return False
        try:
            addr = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._proxies)

    def _from_credentials(self, header: str | None) -> str:
        if not header:
            raise Unauthorized("missing credentials: send 'Authorization: Bearer <token>'")
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            tenant = self._match_token(value.encode())
        elif scheme == "basic" and value:
            tenant = self._match_basic(value)
        else:
            raise Unauthorized("unsupported Authorization scheme: use 'Bearer <token>' or Basic auth")
        if tenant is None:
            raise Unauthorized("invalid credentials")
        return tenant

    def _match_token(self, token: bytes) -> str | None:
        found = None
        for candidate, tenant in self._tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = tenant
        return found

    def _match_basic(self, value: str) -> str | None:
        try:
            user, sep, password = base64.b64decode(value, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            raise Unauthorized("malformed Basic credentials") from None
        if not sep:
            raise Unauthorized("malformed Basic credentials")
        found = self._match_token(password)
        for pk, sk, tenant in self._keys:
            ok = hmac.compare_digest(pk, user) & hmac.compare_digest(sk, password)
            if ok and found is None:
                found = tenant
        return found


def grpc_peer_host(peer: str | None) -> str | None:
    """The IP address of a gRPC peer string (``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``, ``ipv6:%5B::1%5D:5000``);
    None for other kinds (``unix:``) or when unparsable. Format: https://github.com/grpc/grpc/blob/master/doc/naming.md"""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    rest = rest.replace("%5B", "[").replace("%5D", "]")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]") or None
    return None
