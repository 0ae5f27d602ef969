"""What a client sends the QA service, checked before any of it reaches a model.

Every way a body can be wrong gets a :class:`BadRequest` (a 4xx with a message saying what to
fix), never an exception that escapes as a 500: invalid UTF-8 or JSON, JSON nested deeper than
the parser's stack, numbers too long to convert, the wrong shape or types, unknown fields, lone
UTF-16 surrogates (which no encoder downstream accepts), text with nothing visible in it
(zero-width, control or combining characters only), and sizes over the limits. The body itself is
read in chunks with a size limit and a time limit, so a huge or chunked body is refused while it
streams, and a client that stops sending mid-body does not hold the request open.
"""
from __future__ import annotations

import asyncio
import json
import unicodedata
from typing import AsyncIterator

# Characters that show nothing: controls, formats (zero-width space/joiner, BOM ...), combining
# marks, separators, surrogates, private use and unassigned code points.
_INVISIBLE = frozenset({"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Cs", "Co", "Cn"})


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def read_limited(chunks: AsyncIterator[bytes], limit: int, timeout: float) -> bytes:
    """The body from its chunks, refused (413) as soon as it passes ``limit`` bytes and (408)
    when the client takes longer than ``timeout`` seconds to send it."""
    body = bytearray()

    async def collect() -> None:
        async for chunk in chunks:
            body.extend(chunk)
            if len(body) > limit:
                raise BadRequest(413, f"request body exceeds the limit of {limit} bytes")

    try:
        await asyncio.wait_for(collect(), timeout=timeout)
    except asyncio.TimeoutError:
        raise BadRequest(408, f"the request body did not arrive within {timeout} s") from None
    return bytes(body)


def visible(text: str) -> bool:
    """True when ``text`` has at least one character that shows something."""
    return any(unicodedata.category(ch) not in _INVISIBLE for ch in text)


def _text_field(data: dict, name: str, limit: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(422, f"'{name}' must be a string, got {type(value).__name__}")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise BadRequest(422, f"'{name}' contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); "
                              "send valid Unicode text")
    stripped = value.strip()
    if not stripped:
        raise BadRequest(422, f"'{name}' is empty" + (": leave it out to search the knowledge base"
                                                      if name == "context" else ""))
    if not visible(stripped):
        raise BadRequest(422, f"'{name}' has no visible characters (only zero-width, control or "
                              "combining marks)")
    # A question is read stripped; a context is kept as sent, since answers carry offsets into it.
    kept = stripped if name == "question" else value
    if len(kept) > limit:
        raise BadRequest(422, f"'{name}' has {len(kept)} characters; the limit is {limit}")
    return kept


def parse_answer_request(body: bytes, *, max_body_bytes: int, max_question_chars: int,
                         max_context_chars: int) -> tuple[str, str | None]:
    """(question, context or None) from a request body, or :class:`BadRequest` saying what is wrong."""
    if len(body) > max_body_bytes:
        raise BadRequest(413, f"request body is {len(body)} bytes; the limit is {max_body_bytes}")
    if not body.strip():
        raise BadRequest(400, 'empty body: send JSON {"question": "...", "context": "..."}')
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(400, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise BadRequest(400, "JSON nested too deeply: send one flat object") from None
    except ValueError as exc:  # an integer literal too long to convert, and the like
        raise BadRequest(400, f"unreadable JSON value: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, 'body must be a JSON object {"question": "...", "context": "..."}')
    unknown = sorted(set(data) - {"question", "context"})
    if unknown:
        raise BadRequest(422, f"unknown field(s) {', '.join(map(str, unknown))[:200]}; valid: question, context")
    if data.get("question") is None:
        raise BadRequest(422, "field 'question' is required")
    question = _text_field(data, "question", max_question_chars)
    return question, _text_field(data, "context", max_context_chars)
