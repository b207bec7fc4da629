"""The upload cap, applied while the body streams in (issue 23, finding 12).

FastAPI hands ``/v1/predict`` an ``UploadFile`` only after Starlette has parsed the whole
multipart body, spooling it to the temporary disk past 1 MB: a 2 GB upload was written out
whole before the endpoint refused it, and parallel ones could fill the disk and fail other
clients' uploads. This ASGI middleware refuses a body on its ``Content-Length`` and stops
reading a chunked one the moment it crosses the cap, before the application sees more.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

FORM_SLACK = 64 << 10  # bytes of multipart headers and form fields allowed beside the file


def keep_uploads_in_memory(limit: int) -> None:
    """Spool uploads up to ``limit`` bytes (the capped body) in memory, never to the temp
    disk: a full temp disk then cannot turn valid uploads into 'error parsing the body'."""
    try:
        from starlette.formparsers import MultiPartParser
    except ImportError:  # pragma: no cover - every supported Starlette has it
        return
    MultiPartParser.spool_max_size = max(int(MultiPartParser.spool_max_size), limit)


async def too_large(send: Send, shown: str) -> None:
    """A 413 JSON reply naming the cap."""
    body = json.dumps({"detail": f"upload larger than {shown}"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UploadCap:
    """Refuse request bodies over ``limit`` bytes while they stream (413, the cap named)."""

    def __init__(self, app: ASGIApp, limit: int, shown: str) -> None:
        self.app, self.limit, self.shown = app, limit, shown

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.strip().isdigit() and int(length) > self.limit:
            await too_large(send, self.shown)  # refused before one byte of it is read
            return
        state = {"seen": 0, "over": False, "started": False}

        async def capped() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:  # stop here: the rest is never read
                    state["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded(message: Message) -> None:
            if state["over"]:
                return  # the app's reply to a cut body: replaced by the 413 below
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, capped, guarded)
        except Exception:
            if not state["over"]:  # only the failure a cut body causes is ours to answer
                raise
        if state["over"] and not state["started"]:
            await too_large(send, self.shown)
