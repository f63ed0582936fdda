"""ASGI middleware that bounds every request: body size (declared or streamed) and wall time.

A body over the limit is answered 413 whether its size was declared (Content-Length) or not (chunked
transfer): the app is then told the client disconnected, and whatever the app answers after that is
dropped, so the client sees the 413 (a framework would otherwise report the cut body as a 400). A request
over its time limit is cancelled -- its queued model work is dropped with it -- and answered 504; one still
open when the server's graceful shutdown runs out is answered 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json


async def _respond(send, status: int, detail: str, extra_headers: tuple = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra_headers)})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app, max_body_bytes: int, timeout_s: float):
        self.app, self.max_body_bytes, self.timeout_s = app, max_body_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            status = 413 if declared.isdigit() else 400
            detail = (
                f"request body larger than {self.max_body_bytes} bytes"
                if status == 413
                else "bad Content-Length"
            )
            return await _respond(send, status, detail, ((b"connection", b"close"),))
        state = {"seen": 0, "started": False, "answered": False}

        async def guarded_receive():
            if state["answered"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_body_bytes:
                    await answer(413, f"request body larger than {self.max_body_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["answered"]:
                return  # we answered already (413 / 504); the app's late answer is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        async def answer(status: int, detail: str) -> None:
            if not state["started"] and not state["answered"]:
                state["answered"] = True
                await _respond(send, status, detail, ((b"connection", b"close"),))
            state["answered"] = True

        try:
            await asyncio.wait_for(self.app(scope, guarded_receive, guarded_send), self.timeout_s)
        except TimeoutError:
            await answer(504, f"request took longer than {self.timeout_s:g}s")
        except asyncio.CancelledError:
            # the server cancels what is still open when its graceful-shutdown time is up: the client gets a
            # 503 instead of a cut connection, and the server's log no traceback; the task ends here either way
            with contextlib.suppress(Exception):
                await answer(503, "the service is shutting down")
        except Exception:
            if not state["answered"]:
                raise  # a real error: the framework's error handling reports it
