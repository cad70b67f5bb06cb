"""Secret redaction of every string relay forwards, applied to accepted requests before they are spooled.

The catalogue is data, in gitleaks' rule format (https://github.com/gitleaks/gitleaks#configuration):

- ``relay/secrets/gitleaks.toml`` — a subset of gitleaks' default rules (MIT, see ``LICENSE-gitleaks``; converted
  by ``scripts/gitleaks_subset.py``): cloud, LLM vendors, VCS, registries, chat, payments, JWTs, PEM private keys…
- ``relay/secrets/relay.toml`` — relay's own rules for what gitleaks leaves to its entropy-based generic rule:
  ``k=v`` / ``k: v`` / JSON ``"k": "v"`` credential assignments, ``Authorization`` values, URLs with passwords,
  AWS secret access keys, Azure connection strings, Langfuse and Anthropic keys.

How a string is checked (gitleaks' own strategy): strings shorter than :data:`MIN_LENGTH` are skipped; one
keyword regex (a trie of every rule's keywords, lower-case) finds which rules can match at all; only those rules'
regexes run. A match whose secret (``secretGroup``, else group 1 if any, else the whole match) has less Shannon
entropy than the rule's ``entropy``, matches one of its ``allow`` regexes, or is in the user's allowlist is kept.
Every candidate rule looks at the original text; overlapping secrets merge into one :data:`REDACTED`. A secret is
cut at a double quote and never ends with a backslash (which would break a JSON escape such as ``\\"``), so
surrounding JSON stays valid; keys and ids are untouched.

Where (OTLP protobuf messages, https://github.com/open-telemetry/opentelemetry-proto): string values (nested in
arrays and key-value lists too) of resource, scope, span, span event, span link, log record and metric data
point attributes; log record bodies; span status messages. Ids are bytes fields and never touched; attribute
keys, span and event names are not changed.
"""

from __future__ import annotations

import math
import re
import tomllib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources

from google.protobuf.message import Message

from relay.model import Signal

__all__ = ["Rule", "Redactor", "load_catalogue", "REDACTED", "MIN_LENGTH", "STEP_ITEMS"]

#: Replacement of a secret.
REDACTED = "[REDACTED]"
#: Strings shorter than this are not checked (no rule matches fewer characters).
MIN_LENGTH = 8
_CLEAN_CACHE = 8192
#: Items (spans, log records, metric data points) per step of :meth:`Redactor.redact_steps`: ~1 ms of CPU for
#: GenAI spans with content (~12 µs per span), so a 512-span request does not hold the event loop for ~7 ms at once.
STEP_ITEMS = 64


@dataclass(frozen=True)
class Rule:
    """One secret rule: ``regex`` (compiled), lower-case ``keywords`` (any must occur for the rule to run),
    ``secret_group`` (0 = whole match), minimum Shannon ``entropy`` (bits per char, 0 = none), ``allow``
    regexes on the secret."""

    id: str
    regex: re.Pattern[str]
    keywords: tuple[str, ...]
    secret_group: int = 0
    entropy: float = 0.0
    allow: tuple[re.Pattern[str], ...] = ()


def _rules_from_toml(text: str) -> list[Rule]:
    out = []
    for r in tomllib.loads(text).get("rules", []):
        with warnings.catch_warnings():  # Go-syntax classes like [[:alnum:]] warn "possible nested set"
            warnings.simplefilter("ignore", FutureWarning)
            rx = re.compile(r["regex"])
        group = r.get("secretGroup", 1 if rx.groups else 0)
        out.append(
            Rule(
                r["id"],
                rx,
                tuple(k.lower() for k in r.get("keywords", ())),
                int(group),
                float(r.get("entropy", 0.0)),
                tuple(re.compile(a) for a in r.get("allow", ())),
            )
        )
    return out


def load_catalogue() -> list[Rule]:
    """The built-in rules: gitleaks' subset then relay's own (``relay/secrets/*.toml``, package data)."""
    base = resources.files("relay") / "secrets"
    return [
        *_rules_from_toml((base / "gitleaks.toml").read_text()),
        *_rules_from_toml((base / "relay.toml").read_text()),
    ]


def _entropy(s: str) -> float:
    """Shannon entropy of ``s`` in bits per character (gitleaks' measure)."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _trie_regex(words: list[str]) -> str:
    """One regex matching any of ``words``, factored as a trie (Python ``re`` has no Aho-Corasick, but a
    prefix-factored alternation tries only a few branches per position)."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        if "" in node and len(node) == 1:
            return ""
        alts = [re.escape(ch) + build(node[ch]) for ch in sorted(k for k in node if k)]
        optional = "" in node
        if len(alts) == 1 and not optional:
            return alts[0]
        group = "(?:" + "|".join(alts) + ")"
        return group + "?" if optional else group

    return build(trie)


#: ``AnyValue`` kinds that hold other values (walked by ``Redactor._value``).
_CONTAINERS = frozenset({"array_value", "kvlist_value"})


class Redactor:
    """Redacts secrets in strings and in OTLP export requests.

    ``rules``: the catalogue (:func:`load_catalogue`) and/or custom rules; ``patterns``: extra user regexes (rules
    ``custom-1``…, no keywords: they run on every checked string); ``allowlist``: exact secrets never redacted.
    ``on_hit(rule_id, n)`` is called for every rule that redacted ``n`` secrets (for
    ``relay_redactions_total{rule}``).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        patterns: Sequence[str] = (),
        allowlist: Sequence[str] = (),
        on_hit: Callable[[str, int], None] | None = None,
    ):
        self.rules = list(rules) + [Rule(f"custom-{i + 1}", re.compile(p), ()) for i, p in enumerate(patterns)]
        self._allow = frozenset(allowlist)
        self._on_hit = on_hit
        self._always = [r for r in self.rules if not r.keywords]
        direct: dict[str, list[Rule]] = {}
        for r in self.rules:
            for k in r.keywords:
                direct.setdefault(k, []).append(r)
        # The trie finds the longest keyword at each position; a keyword found also stands for every keyword
        # inside it ("password" contains "passw" and "word"), so those rules run too.
        self._by_kw: dict[str, list[Rule]] = {
            k: [r for k2, rs in direct.items() if k2 in k for r in rs] for k in direct
        }
        # A lookahead makes the matches overlapping: one keyword cannot hide another that starts inside it.
        self._kw = re.compile("(?=(" + _trie_regex(sorted(direct)) + "))") if direct else None
        self._clean: set[str] = set()

    def __len__(self) -> int:
        return len(self.rules)

    # ------------------------------------------------------------------ strings

    def redact(self, s: str) -> str:
        """``s`` with every secret replaced by :data:`REDACTED` (``s`` itself when nothing matched)."""
        if len(s) < MIN_LENGTH or s in self._clean:
            return s
        candidates = list(self._always)
        if self._kw is not None:
            keywords = set(self._kw.findall(s.lower()))
            if keywords:
                seen: set[str] = set()
                for k in keywords:
                    for r in self._by_kw[k]:
                        if r.id not in seen:
                            seen.add(r.id)
                            candidates.append(r)
        found: list[tuple[int, int]] = []
        for rule in candidates:
            spans = self._spans(rule, s)
            if spans:
                found += spans
                if self._on_hit is not None:
                    self._on_hit(rule.id, len(spans))
        if not found:
            if len(self._clean) >= _CLEAN_CACHE:
                self._clean.clear()
            self._clean.add(s)
            return s
        # every rule looked at the original text; overlapping secrets merge into one [REDACTED]
        merged: list[list[int]] = []
        for a, b in sorted(found):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        parts, last = [], 0
        for a, b in merged:
            parts += [s[last:a], REDACTED]
            last = b
        parts.append(s[last:])
        return "".join(parts)

    def _spans(self, rule: Rule, s: str) -> list[tuple[int, int]]:
        """Where ``rule`` finds secrets in ``s``: ``(start, end)`` of each secret it does not let pass."""
        spans: list[tuple[int, int]] = []
        pos = 0
        while (m := rule.regex.search(s, pos)) is not None:
            pos = m.end() if m.end() > m.start() else m.start() + 1
            g = rule.secret_group if rule.secret_group <= (rule.regex.groups or 0) else 0
            secret = m.group(g)
            if secret is None and g:
                g = next((i for i in range(1, rule.regex.groups + 1) if m.group(i)), 0)
                secret = m.group(g)
            if not secret or REDACTED in secret or secret in self._allow:
                continue
            if rule.entropy and _entropy(secret) < rule.entropy:
                continue
            if any(a.search(secret) for a in rule.allow):
                continue
            a, b = m.span(g)
            if g:  # the next search starts at this secret: a value can be the key of the next assignment
                pos = max(a, m.start() + 1)  # ("password": "SECRET_KEY = '…'")
            quote = s.find('"', a, b)  # a secret never spans a quote: JSON text around it stays JSON
            if quote != -1:
                b = quote
            while b > a and s[b - 1] == "\\":  # never swallow the backslash of an escape (\" in JSON text)
                b -= 1
            if b > a:
                spans.append((a, b))
        return spans

    # ------------------------------------------------------------------ OTLP messages

    def redact_message(self, signal: Signal, msg: Message) -> int:
        """Redact every forwarded string of an ``Export<signal>ServiceRequest`` in place; returns how many strings
        changed."""
        total = 0
        for step in self.redact_steps(signal, msg):
            if step is not None:
                total = step
        return total

    def redact_steps(self, signal: Signal, msg: Message, every: int = STEP_ITEMS) -> Iterator[int | None]:
        """:meth:`redact_message` in steps, for callers on an event loop: yields None after every ``every`` items
        (spans, log records, metric data points) when more follow — the caller may let other work run then —,
        and finally the number of strings changed."""
        n = 0
        left = every
        if signal is Signal.TRACES:
            for rs in msg.resource_spans:
                n += self._attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    n += self._attrs(ss.scope.attributes)
                    for sp in ss.spans:
                        if not left:
                            yield None
                            left = every
                        left -= 1
                        n += self._attrs(sp.attributes)
                        for ev in sp.events:
                            n += self._attrs(ev.attributes)
                        for ln in sp.links:
                            n += self._attrs(ln.attributes)
                        if sp.status.message:
                            new = self.redact(sp.status.message)
                            if new is not sp.status.message and new != sp.status.message:
                                sp.status.message = new
                                n += 1
        elif signal is Signal.LOGS:
            for rl in msg.resource_logs:
                n += self._attrs(rl.resource.attributes)
                for sl in rl.scope_logs:
                    n += self._attrs(sl.scope.attributes)
                    for rec in sl.log_records:
                        if not left:
                            yield None
                            left = every
                        left -= 1
                        n += self._attrs(rec.attributes)
                        if rec.HasField("body"):
                            n += self._value(rec.body)
        else:
            for rm in msg.resource_metrics:
                n += self._attrs(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind is None:
                            continue
                        for dp in getattr(m, kind).data_points:
                            if not left:
                                yield None
                                left = every
                            left -= 1
                            n += self._attrs(dp.attributes)
        yield n

    def _attrs(self, attrs) -> int:
        n = 0
        redact = self.redact
        for kv in attrs:
            v = kv.value
            s = v.string_value  # "" unless the value is a string (the common case: no oneof lookup)
            if s:
                if len(s) >= MIN_LENGTH:
                    new = redact(s)
                    if new is not s:
                        v.string_value = new
                        n += 1
            elif v.WhichOneof("value") in _CONTAINERS:
                n += self._value(v)
        return n

    def _value(self, v) -> int:
        kind = v.WhichOneof("value")
        if kind == "string_value":
            s = v.string_value
            new = self.redact(s)
            if new is not s:
                v.string_value = new
                return 1
            return 0
        if kind == "array_value":
            return sum(self._value(x) for x in v.array_value.values)
        if kind == "kvlist_value":
            return self._attrs(v.kvlist_value.values)
        return 0
