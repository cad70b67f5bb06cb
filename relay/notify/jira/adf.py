"""Jira rich text: relay's small Markdown subset → Atlassian Document Format (Cloud, REST v3) or wiki markup
(Data Center / Server, REST v2), and ADF → plain text.

The Jira templates (``summary`` excepted) render *relay markup*, one format for both flavours:

- a blank line separates paragraphs; other line breaks inside a paragraph are kept (ADF ``hardBreak``);
- ``# ``, ``## ``, ``### `` … at the start of a line: a heading (levels 1–6);
- ``- `` or ``* `` at the start of a line: a bullet-list item (consecutive items form one list);
- inline: ``**bold**``, ```code```, ``[title](https://url)`` and bare ``http(s)://`` URLs (links).

Sources: ADF structure https://developer.atlassian.com/cloud/jira/platform/apis/document/structure/ (``doc``
version 1; ``paragraph``, ``heading`` with ``attrs.level``, ``bulletList``/``listItem``, ``hardBreak``,
``text`` with marks ``strong``/``code``/``link{href}``; text nodes must not be empty); wiki markup
https://jira.atlassian.com/secure/WikiRendererHelpAction.jspa (``h2.``, ``* item``, ``*bold*``, ``{{code}}``,
``[title|url]``, backslash escapes).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["markup_to_adf", "markup_to_wiki", "adf_to_text", "truncate"]

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_INLINE = re.compile(
    r"\*\*(?P<bold>.+?)\*\*"
    r"|`(?P<code>[^`]+)`"
    r"|\[(?P<title>[^\]]+)\]\((?P<href>https?://[^)\s]+)\)"
    r"|(?P<url>https?://[^\s<>()\[\]]+[^\s<>()\[\].,;:!?'\"])"
)
_WIKI_SPECIAL = re.compile(r"([\\\[\]{}*_|^~+])")


def truncate(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters (code points), ending with ``marker`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(marker), 0)] + marker


def _blocks(text: str) -> list[tuple[str, Any]]:
    """Split markup into blocks: ``("heading", (level, text))``, ``("list", [item…])``, ``("para", [line…])``."""
    blocks: list[tuple[str, Any]] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(("para", list(para)))
            para.clear()
        if items:
            blocks.append(("list", list(items)))
            items.clear()

    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip()
        if not line.strip():
            flush()
            continue
        h = _HEADING.match(line)
        b = _BULLET.match(line)
        if h:
            flush()
            blocks.append(("heading", (len(h.group(1)), h.group(2).strip())))
        elif b:
            if para:
                flush()
            items.append(b.group(1).strip())
        else:
            if items:
                flush()
            para.append(line.strip())
    flush()
    return blocks


def _inline(text: str) -> list[tuple[str, str, str | None]]:
    """Split inline markup into ``(kind, text, href)`` runs; kinds: ``text``, ``bold``, ``code``, ``link``."""
    runs: list[tuple[str, str, str | None]] = []
    pos = 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            runs.append(("text", text[pos : m.start()], None))
        if m.group("bold") is not None:
            runs.append(("bold", m.group("bold"), None))
        elif m.group("code") is not None:
            runs.append(("code", m.group("code"), None))
        elif m.group("title") is not None:
            runs.append(("link", m.group("title"), m.group("href")))
        else:
            runs.append(("link", m.group("url"), m.group("url")))
        pos = m.end()
    if pos < len(text):
        runs.append(("text", text[pos:], None))
    return [r for r in runs if r[1]]


def _adf_inline(text: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for kind, t, href in _inline(text):
        node: dict[str, Any] = {"type": "text", "text": t}
        if kind == "bold":
            node["marks"] = [{"type": "strong"}]
        elif kind == "code":
            node["marks"] = [{"type": "code"}]
        elif kind == "link":
            node["marks"] = [{"type": "link", "attrs": {"href": href}}]
        nodes.append(node)
    return nodes


def markup_to_adf(text: str) -> dict[str, Any]:
    """Relay markup → an ADF document ``{"type": "doc", "version": 1, "content": [...]}`` (never contains an
    empty text node; an empty input gives one empty paragraph)."""
    content: list[dict[str, Any]] = []
    for kind, value in _blocks(text):
        if kind == "heading":
            level, t = value
            content.append({"type": "heading", "attrs": {"level": level}, "content": _adf_inline(t)})
        elif kind == "list":
            content.append(
                {
                    "type": "bulletList",
                    "content": [
                        {"type": "listItem", "content": [{"type": "paragraph", "content": _adf_inline(item)}]}
                        for item in value
                    ],
                }
            )
        else:
            inline: list[dict[str, Any]] = []
            for i, line in enumerate(value):
                if i:
                    inline.append({"type": "hardBreak"})
                inline.extend(_adf_inline(line))
            content.append({"type": "paragraph", "content": inline})
    if not content:
        content.append({"type": "paragraph", "content": []})
    return {"type": "doc", "version": 1, "content": content}


def _wiki_escape(text: str) -> str:
    return _WIKI_SPECIAL.sub(r"\\\1", text)


def _wiki_inline(text: str) -> str:
    out: list[str] = []
    for kind, t, href in _inline(text):
        if kind == "bold":
            out.append(f"*{_wiki_escape(t)}*")
        elif kind == "code":
            out.append("{{" + t.replace("}", "\\}") + "}}")
        elif kind == "link":
            out.append(f"[{_wiki_escape(t)}|{href}]" if t != href else f"[{href}]")
        else:
            out.append(_wiki_escape(t))
    return "".join(out)


def markup_to_wiki(text: str) -> str:
    """Relay markup → Jira wiki markup (REST v2 description and comment bodies)."""
    out: list[str] = []
    for kind, value in _blocks(text):
        if kind == "heading":
            level, t = value
            out.append(f"h{level}. {_wiki_inline(t)}")
        elif kind == "list":
            out.append("\n".join(f"* {_wiki_inline(item)}" for item in value))
        else:
            out.append("\n".join(_wiki_inline(line) for line in value))
    return "\n\n".join(out)


def adf_to_text(node: Any) -> str:
    """The plain text of an ADF node (or document): text nodes concatenated, line breaks for ``hardBreak`` and
    between blocks. A string is returned unchanged (REST v2 bodies are strings)."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict):
        return ""
    t = node.get("type")
    if t == "text":
        return str(node.get("text", ""))
    if t == "hardBreak":
        return "\n"
    inner = "".join(adf_to_text(c) for c in node.get("content") or [])
    return inner + "\n" if t in ("paragraph", "heading", "listItem") else inner
