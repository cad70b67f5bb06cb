"""The subset of JQL the fake Jira understands (https://support.atlassian.com/jira-software-cloud/docs/jql-fields/,
…/jql-operators/), enough for relay's queries and a bit more:

- clauses ``field OP value`` with ``=``, ``!=``, ``~``, ``!~``, ``>``, ``>=``, ``<``, ``<=``; ``field IS [NOT]
  EMPTY|NULL``; ``field [NOT] IN (v, …)``; ``AND``, ``OR``, ``NOT`` and parentheses; ``ORDER BY f [ASC|DESC], …``;
- fields ``project``, ``key``/``issuekey``, ``issuetype``/``type``, ``summary``, ``labels``, ``status``,
  ``statusCategory``, ``resolution``, ``resolutiondate``/``resolved``, ``created``, ``updated``, ``priority``,
  ``cf[N]``/``customfield_N``;
- values: ``"quoted"`` / ``'quoted'`` strings with backslash escapes, bare words, relative dates ``-Nm`` / ``-Nh``
  / ``-Nd`` / ``-Nw`` (from now), absolute dates ``"yyyy-mm-dd"`` / ``"yyyy-mm-dd hh:mm"`` (UTC).

Like Jira, negative operators (``!=``, ``!~``, ``NOT IN``) and comparisons never match an empty field; ``~`` is a
case-insensitive phrase match (a value wrapped in inner quotes is a phrase). Errors raise :class:`JqlError` with
Jira's wording, which the fake answers as 400 ``{"errorMessages": [...]}``.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["JqlError", "Query", "parse_jql"]

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>!=|!~|>=|<=|=|~|>|<)"""
    r"""|(?P<punct>[(),])|(?P<word>[^\s()=!~<>,"']+))"""
)
_REL = re.compile(r"^([+-]?\d+)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_KEYWORDS = {"and", "or", "not", "is", "in", "empty", "null", "order", "by", "asc", "desc"}
_DATE_FIELDS = {"created", "updated", "resolutiondate"}
_ALIASES = {"issuekey": "key", "type": "issuetype", "resolved": "resolutiondate", "category": "statuscategory"}


class JqlError(Exception):
    """An invalid or unsupported query; ``str()`` is Jira's error message."""


@dataclass
class _Tok:
    kind: str  # str, op, punct, word, end
    value: str


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def _tokens(jql: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    jql = jql.strip()
    while pos < len(jql):
        m = _TOKEN.match(jql, pos)
        if not m or m.end() == pos:
            raise JqlError(
                f"Error in the JQL Query: The character '{jql[pos]}' is a reserved JQL character. "
                f"(line 1, character {pos + 1})"
            )
        pos = m.end()
        kind = m.lastgroup or "word"
        value = m.group(kind)
        out.append(_Tok(kind, _unquote(value) if kind == "str" else value))
    out.append(_Tok("end", ""))
    return out


@dataclass
class Query:
    """A parsed query: ``where`` (a predicate over an issue view, None when there is no condition) and
    ``order`` (``[(field, ascending)]``). ``fields`` lists the fields the condition names."""

    where: Callable[[dict[str, Any]], bool] | None
    order: list[tuple[str, bool]]
    fields: set[str]


class _Parser:
    def __init__(self, jql: str, now: float, projects: set[str]):
        self.toks = _tokens(jql)
        self.i = 0
        self.now = now
        self.projects = {p.upper() for p in projects}
        self.fields: set[str] = set()

    # -- token helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def kw(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "word" and tok.value.lower() == word:
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: str | None = None) -> _Tok:
        tok = self.take()
        if tok.kind != kind or (value is not None and tok.value != value):
            raise JqlError(f"Error in the JQL Query: Expecting {value or kind} but got '{tok.value}'.")
        return tok

    # -- grammar
    def query(self) -> Query:
        where = None
        tok = self.peek()
        if not (tok.kind == "end" or (tok.kind == "word" and tok.value.lower() == "order")):
            where = self.or_expr()
        order: list[tuple[str, bool]] = []
        if self.kw("order"):
            if not self.kw("by"):
                raise JqlError("Error in the JQL Query: Expecting 'by' after 'order'.")
            while True:
                name = self.field_name(self.take())
                asc = not self.kw("desc")
                if asc:
                    self.kw("asc")
                order.append((name, asc))
                if self.peek().kind == "punct" and self.peek().value == ",":
                    self.take()
                    continue
                break
        if self.peek().kind != "end":
            raise JqlError(f"Error in the JQL Query: Expecting either 'OR' or 'AND' but got '{self.peek().value}'.")
        return Query(where, order, self.fields)

    def or_expr(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self.and_expr()]
        while self.kw("or"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda v: any(p(v) for p in parts))

    def and_expr(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self.not_expr()]
        while self.kw("and"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda v: all(p(v) for p in parts))

    def not_expr(self) -> Callable[[dict[str, Any]], bool]:
        if self.kw("not"):
            inner = self.not_expr()
            return lambda v: not inner(v)
        tok = self.peek()
        if tok.kind == "punct" and tok.value == "(":
            self.take()
            inner = self.or_expr()
            self.expect("punct", ")")
            return inner
        return self.clause()

    def field_name(self, tok: _Tok) -> str:
        if tok.kind not in ("word", "str") or (tok.kind == "word" and tok.value.lower() in _KEYWORDS):
            raise JqlError(f"Error in the JQL Query: Expecting a field name but got '{tok.value}'.")
        name = tok.value.lower()
        m = re.match(r"^cf\[(\d+)\]$", name)
        if m:
            name = f"customfield_{m.group(1)}"
        name = _ALIASES.get(name, name)
        known = {
            "project",
            "key",
            "issuetype",
            "summary",
            "labels",
            "status",
            "statuscategory",
            "resolution",
            "resolutiondate",
            "created",
            "updated",
            "priority",
        }
        if name not in known and not name.startswith("customfield_"):
            raise JqlError(f"Field '{tok.value}' does not exist or you do not have permission to view it.")
        self.fields.add(name)
        return name

    def value(self) -> tuple[str, Any]:
        tok = self.take()
        if tok.kind not in ("word", "str"):
            raise JqlError(f"Error in the JQL Query: Expecting a value but got '{tok.value}'.")
        return tok.kind, tok.value

    def clause(self) -> Callable[[dict[str, Any]], bool]:
        name = self.field_name(self.take())
        if self.kw("is"):
            negate = self.kw("not")
            if not (self.kw("empty") or self.kw("null")):
                raise JqlError("Error in the JQL Query: Expecting 'EMPTY' or 'NULL' after 'IS'.")
            return lambda v: _empty(v.get(name)) != negate
        negate_in = self.kw("not")
        if self.kw("in"):
            self.expect("punct", "(")
            values = []
            while True:
                values.append(self.coerce(name, *self.value()))
                if self.peek().kind == "punct" and self.peek().value == ",":
                    self.take()
                    continue
                break
            self.expect("punct", ")")
            if negate_in:
                return lambda v: not _empty(v.get(name)) and not any(_eq(v.get(name), x) for x in values)
            return lambda v: any(_eq(v.get(name), x) for x in values)
        if negate_in:
            raise JqlError("Error in the JQL Query: Expecting 'IN' after 'NOT'.")
        op = self.expect("op").value
        x = self.coerce(name, *self.value())
        if op == "=":
            return lambda v: _eq(v.get(name), x)
        if op == "!=":
            return lambda v: not _empty(v.get(name)) and not _eq(v.get(name), x)
        if op in ("~", "!~"):
            if name in _DATE_FIELDS or name in ("project", "status", "statuscategory", "issuetype", "labels"):
                raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
            phrase = str(x).strip('"').lower()
            if op == "~":
                return lambda v: _contains(v.get(name), phrase)
            return lambda v: not _empty(v.get(name)) and not _contains(v.get(name), phrase)
        if name not in _DATE_FIELDS:
            raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
        cmp = {">": lambda a: a > x, ">=": lambda a: a >= x, "<": lambda a: a < x, "<=": lambda a: a <= x}[op]
        return lambda v: v.get(name) is not None and cmp(v[name])

    def coerce(self, name: str, kind: str, raw: str) -> Any:
        if name in _DATE_FIELDS:
            m = _REL.match(raw)
            if m:
                return self.now + int(m.group(1)) * _UNITS[m.group(2)]
            for fmt in ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d"):
                try:
                    return float(calendar.timegm(time.strptime(raw, fmt)))
                except ValueError:
                    continue
            raise JqlError(
                f"Date value '{raw}' for field '{name}' is invalid. Valid formats include: "
                f"'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period "
                f"format e.g. '-5d', '4w 2d'."
            )
        if name == "project" and raw.upper() not in self.projects:
            raise JqlError(f"The value '{raw}' does not exist for the field 'project'.")
        return raw


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def _eq(actual: Any, expected: Any) -> bool:
    if isinstance(actual, list):
        return any(_eq(a, expected) for a in actual)
    if isinstance(actual, (set, tuple)):
        return any(_eq(a, expected) for a in actual)
    if actual is None:
        return False
    if isinstance(expected, float):
        return float(actual) == expected
    return str(actual).casefold() == str(expected).casefold()


def _contains(actual: Any, phrase: str) -> bool:
    if actual is None:
        return False
    if isinstance(actual, dict):
        actual = actual.get("value", "")
    return phrase in str(actual).lower()


def parse_jql(jql: str, *, now: float, projects: set[str]) -> Query:
    """Parse ``jql`` against the fake's ``projects`` (keys) at time ``now`` (unix seconds, for relative dates).
    Raises :class:`JqlError`."""
    return _Parser(jql, now, projects).query()
