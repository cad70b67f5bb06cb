"""Message payload checks of the fake Slack (:mod:`tests.fakes.slack`), as Slack applies them to
``chat.postMessage`` / ``chat.update`` / incoming webhooks.

Blocks are parsed with slack-sdk's own models (``slack_sdk.models.blocks.Block.parse`` + ``validate_json()``), plus
the Block Kit limits slack-sdk does not check (https://docs.slack.dev/reference/block-kit/blocks and
``/composition-objects/text-object``): ≤ 50 blocks, non-empty text objects, section field text ≤ 2000 chars,
button text ≤ 75 chars, block_id ≤ 255 chars. Message ``text`` over 40,000 chars is ``msg_too_long``
(https://docs.slack.dev/reference/methods/chat.postMessage).
"""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

__all__ = ["check_blocks", "check_message", "decode_json_arg", "PayloadError", "MAX_BLOCKS", "MAX_TEXT"]

MAX_BLOCKS = 50
MAX_TEXT = 40_000
MAX_ATTACHMENTS = 100


class PayloadError(Exception):
    """A rejected payload: ``error`` is Slack's code, ``messages`` the ``response_metadata.messages``."""

    def __init__(self, error: str, messages: list[str] | None = None):
        super().__init__(error)
        self.error = error
        self.messages = messages or []


def decode_json_arg(value: Any) -> Any:
    """Form-encoded requests carry ``blocks``/``attachments``/``metadata`` as JSON strings; JSON bodies as values.
    Raises ``ValueError`` on malformed JSON."""
    if isinstance(value, str):
        return json.loads(value) if value.strip() else None
    return value


def _text_objects(node: Any, path: str):
    if isinstance(node, dict):
        if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
            yield path, node
        for k, v in node.items():
            yield from _text_objects(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _text_objects(v, f"{path}/{i}")


def check_blocks(blocks: Any, where: str = "") -> list[str]:
    """Problems of a ``blocks`` array (empty list when valid), each like ``[json-pointer] message``."""
    if not isinstance(blocks, list):
        return [f"[{where or '/'}] blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"[{where}] must contain at most {MAX_BLOCKS} blocks (got {len(blocks)})")
    for i, raw in enumerate(blocks):
        here = f"{where}/{i}"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            errors.append(f"[{here}] a block must be an object with a type")
            continue
        block = Block.parse(raw)
        if block is None:
            errors.append(f"[{here}] unknown block type {raw.get('type')!r}")
            continue
        try:
            block.validate_json()
        except SlackObjectFormationError as e:
            errors.append(f"[{here}] {e}")
        if len(str(raw.get("block_id", ""))) > 255:
            errors.append(f"[{here}/block_id] must be at most 255 characters")
        for path, obj in _text_objects(raw, here):
            if not isinstance(obj.get("text"), str) or not obj["text"]:
                errors.append(f"[{path}] text must be a non-empty string")
        for j, field in enumerate(raw.get("fields") or []):
            if isinstance(field, dict) and len(str(field.get("text", ""))) > 2000:
                errors.append(f"[{here}/fields/{j}] must be at most 2000 characters")
        for j, el in enumerate(raw.get("elements") or []):
            if isinstance(el, dict) and el.get("type") == "button":
                if len(str((el.get("text") or {}).get("text", ""))) > 75:
                    errors.append(f"[{here}/elements/{j}/text] must be at most 75 characters")
    return errors


def check_message(args: dict[str, Any], *, require_content: bool = True) -> dict[str, Any]:
    """Validate and normalise the message fields of ``args`` (``text``, ``blocks``, ``attachments``, ``metadata``).

    Returns ``{"text", "blocks", "attachments", "metadata"}`` with JSON decoded. Raises :class:`PayloadError`
    with ``invalid_blocks``, ``invalid_attachments``, ``too_many_attachments``, ``no_text``, ``msg_too_long``
    or ``invalid_metadata_format``.
    """
    try:
        blocks = decode_json_arg(args.get("blocks"))
    except ValueError:
        raise PayloadError("invalid_blocks", ["[/blocks] invalid JSON"]) from None
    try:
        attachments = decode_json_arg(args.get("attachments"))
    except ValueError:
        raise PayloadError("invalid_attachments", ["[/attachments] invalid JSON"]) from None
    try:
        metadata = decode_json_arg(args.get("metadata"))
    except ValueError:
        raise PayloadError("invalid_metadata_format") from None
    text = args.get("text")
    if text is not None and not isinstance(text, str):
        text = str(text)
    if blocks is not None:
        errors = check_blocks(blocks, "/blocks")
        if errors:
            raise PayloadError("invalid_blocks", errors)
    if attachments is not None:
        if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
            raise PayloadError("invalid_attachments", ["[/attachments] must be an array of objects"])
        if len(attachments) > MAX_ATTACHMENTS:
            raise PayloadError("too_many_attachments")
        for i, att in enumerate(attachments):
            if "blocks" in att:
                errors = check_blocks(att["blocks"], f"/attachments/{i}/blocks")
                if errors:
                    raise PayloadError("invalid_blocks", errors)
    if metadata is not None:
        if (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload"), dict)
        ):
            raise PayloadError("invalid_metadata_format")
    if require_content and not text and not blocks and not attachments:
        raise PayloadError("no_text")
    if text and len(text) > MAX_TEXT:
        raise PayloadError("msg_too_long")
    return {"text": text, "blocks": blocks, "attachments": attachments, "metadata": metadata}
