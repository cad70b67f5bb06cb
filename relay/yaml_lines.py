"""Line numbers for validation errors: follow a pydantic error location through a composed YAML node tree
(``yaml.compose``), so messages can say ``file:line`` for config files and rule files alike."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["yaml_line"]


def yaml_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node of ``loc`` (mapping keys and sequence indexes) found under ``root``; a
    mapping entry reports its key's line. None without a tree."""
    node = root
    best = root.start_mark.line + 1 if root is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if getattr(k, "value", None) == str(part):
                    nxt, best = v, k.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            best = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return best
