"""A time limit on a new connection's request headers, for uvicorn (which has none).

Without it a client that opens a connection and sends its headers a byte at a time holds that connection
for as long as it likes; enough of them fill `--max-connections` and every innocent user gets 503. With it
the connection is answered 408 and closed when its first request's headers have not arrived in time (an
idle keep-alive connection is uvicorn's own `timeout_keep_alive`'s job). uvicorn is imported only here.
"""

from __future__ import annotations

import asyncio
import json


def header_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (the one it would pick itself) with the header time limit added."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    body = json.dumps({"detail": f"request headers took longer than {timeout_s:g}s"}).encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _headers_too_slow(self) -> None:
            if self.cycle is None and not self.transport.is_closing():  # no request has started yet
                self.transport.write(answer)
                self.transport.close()

        def connection_lost(self, exc) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
