"""Streaming, size-capped decompression of OTLP/HTTP request bodies (``Content-Encoding``).

Spec (OTLP spec "OTLP/HTTP Request", https://opentelemetry.io/docs/specs/otlp/#otlphttp-request): servers MUST
support none and gzip and MUST limit the body size *after* decompression (zip-bomb guard), answering 413 over
the limit. relay also accepts ``deflate`` (zlib-wrapped or raw, as the Collector does), ``zstd`` and ``x-gzip``.
Output is produced in 64 KiB steps and the cap is checked before each step is kept, so a bomb never
materialises more than ``max_bytes`` (+ one step).
"""

from __future__ import annotations

import zlib

import zstandard

__all__ = ["CodecError", "UnsupportedEncoding", "CorruptBody", "TooLarge", "decompress", "SUPPORTED_ENCODINGS"]

_STEP = 64 * 1024
#: zstd frames asking for a larger window than this are refused (bounds decoder memory; zstd -19 uses 8 MiB).
_ZSTD_MAX_WINDOW = 2**25
SUPPORTED_ENCODINGS = ("identity", "gzip", "x-gzip", "deflate", "zstd")


class CodecError(Exception):
    """A request that cannot be decoded. ``message`` is English and developer-facing; ``field`` names the
    offending field path (e.g. ``resourceSpans[0].scopeSpans[0].spans[3].traceId``) when known."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class UnsupportedEncoding(CodecError):
    """``Content-Encoding`` names an encoding relay does not support → HTTP 400 (as the Collector does)."""


class CorruptBody(CodecError):
    """The compressed body is damaged or truncated → HTTP 400 / gRPC INVALID_ARGUMENT."""


class TooLarge(CodecError):
    """The body, or its decompressed form, exceeds the configured cap → HTTP 413 / gRPC RESOURCE_EXHAUSTED."""


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Decode ``body`` according to ``content_encoding`` and return at most ``max_bytes`` bytes.

    ``content_encoding`` is the raw header value (case-insensitive; ``None``/empty/``identity`` = as is; a
    comma-separated list is undone right to left, per RFC 9110 §8.4). Raises :class:`UnsupportedEncoding`
    for an unknown coding, :class:`CorruptBody` for damaged data, :class:`TooLarge` when the output (or the
    identity body) would exceed ``max_bytes``.
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    for c in codings:
        if c not in SUPPORTED_ENCODINGS:
            raise UnsupportedEncoding(
                f"unsupported Content-Encoding {c!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
            )
    data = body
    for c in reversed(codings):
        if c in ("gzip", "x-gzip"):
            data = _inflate(data, 16 + zlib.MAX_WBITS, max_bytes, "gzip", multi_member=True)
        elif c == "deflate":
            wbits = zlib.MAX_WBITS if _looks_like_zlib(data) else -zlib.MAX_WBITS
            data = _inflate(data, wbits, max_bytes, "deflate", multi_member=False)
        elif c == "zstd":
            data = _unzstd(data, max_bytes)
    if len(data) > max_bytes:
        raise TooLarge(f"request body is {len(data)} bytes, over the limit of {max_bytes} bytes")
    return data


def _too_large(name: str, max_bytes: int) -> TooLarge:
    return TooLarge(f"{name}-decompressed request body exceeds the limit of {max_bytes} bytes")


def _looks_like_zlib(data: bytes) -> bool:
    """RFC 1950 header check: CM=8, CINFO<=7, FCHECK makes the first two bytes a multiple of 31."""
    if len(data) < 2:
        return False
    cmf, flg = data[0], data[1]
    return (cmf & 0x0F) == 8 and (cmf >> 4) <= 7 and ((cmf << 8) | flg) % 31 == 0


def _inflate(data: bytes, wbits: int, max_bytes: int, name: str, *, multi_member: bool) -> bytes:
    out = bytearray()
    d = zlib.decompressobj(wbits)
    pending = data
    try:
        while True:
            chunk = d.decompress(pending, _STEP)
            if len(out) + len(chunk) > max_bytes:
                raise _too_large(name, max_bytes)
            out += chunk
            if d.eof:
                rest = d.unused_data
                if multi_member and rest:
                    d, pending = zlib.decompressobj(wbits), rest  # concatenated gzip members (RFC 1952 §2.2)
                    continue
                if rest:
                    raise CorruptBody(f"{name} body has {len(rest)} bytes of trailing garbage")
                return bytes(out)
            pending = d.unconsumed_tail
            if not pending and not chunk:
                raise CorruptBody(f"{name} body is truncated (stream ended before its end marker)")
    except zlib.error as e:
        raise CorruptBody(f"invalid {name} data: {e}") from None


def _unzstd(data: bytes, max_bytes: int) -> bytes:
    # Pass 1 streams and only counts (bomb guard, output discarded); pass 2 decodes for real and detects
    # truncated frames, which the streaming reader silently accepts.
    dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    try:
        total = 0
        with dctx.stream_reader(data, read_across_frames=True) as reader:
            while chunk := reader.read(_STEP):
                total += len(chunk)
                if total > max_bytes:
                    raise _too_large("zstd", max_bytes)
        out = bytearray()
        pending = data
        while pending:
            obj = dctx.decompressobj()
            out += obj.decompress(pending)
            if not obj.eof:
                raise CorruptBody("zstd body is truncated (frame incomplete)")
            pending = obj.unused_data
        return bytes(out)
    except zstandard.ZstdError as e:
        raise CorruptBody(f"invalid zstd data: {e}") from None
