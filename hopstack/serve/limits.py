"""Limits on the request headers of ``hopstack serve`` (docs/concepts/serving.md#request-limits).

Two layers. uvicorn's h11 parser stops reading a request head (request line and headers) past
:data:`PARSER_HEAD_BYTES`, so a header of megabytes is never buffered whole: uvicorn answers 400 and closes
the connection. Below that, :class:`HeaderLimits` answers 431 (Request Header Fields Too Large) with a JSON
body to a request with more than :data:`MAX_HEADER_COUNT` headers or more than :data:`MAX_HEADER_BYTES` of
header names and values, before any other part of the app runs.
"""

from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HEADER_COUNT = 100
"""Most headers a request may carry."""
MAX_HEADER_BYTES = 16 * 1024
"""Most bytes of header names and values a request may carry, all headers together."""
PARSER_HEAD_BYTES = 64 * 1024
"""Most bytes of a request head that the HTTP parser buffers while waiting for its end."""

UVICORN_HEADER_LIMITS: dict[str, Any] = {"http": "h11", "h11_max_incomplete_event_size": PARSER_HEAD_BYTES}
"""``uvicorn.run`` keywords that bound a request head in the parser (httptools, uvicorn's other parser,
has no such bound)."""


def header_problem(headers: Sequence[tuple[bytes, bytes]], max_count: int, max_bytes: int) -> str | None:
    """Why ``headers`` (an ASGI scope's) are over the limits, or None."""
    if len(headers) > max_count:
        return f"{len(headers)} request headers; at most {max_count} are accepted"
    size = sum(len(name) + len(value) for name, value in headers)
    if size > max_bytes:
        return f"request headers of {size:,} bytes; at most {max_bytes:,} bytes (names and values) are accepted"
    return None


class HeaderLimits:
    """ASGI middleware: a 431 with ``{"detail": ...}`` for HTTP requests whose headers are over the limits."""

    def __init__(self, app: ASGIApp, max_count: int = MAX_HEADER_COUNT, max_bytes: int = MAX_HEADER_BYTES):
        self.app = app
        self.max_count = max_count
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = header_problem(scope["headers"], self.max_count, self.max_bytes)
            if problem:
                refusal = JSONResponse({"detail": problem}, status_code=431, headers={"connection": "close"})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
