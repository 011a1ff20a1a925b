"""The display's web server: one page, a server-sent-events stream and a JSON snapshot, on plain asyncio streams.

Three routes, GET (and HEAD) only: ``/`` the page (inline CSS and JS, nothing fetched from elsewhere), ``/events``
a ``text/event-stream`` that starts with the whole state (``snapshot``) and then pushes what changed
(``patch``), and ``/state.json`` the whole state once. Any other path is 404, any other method 405.

A browser never makes the server buffer without bound: each stream keeps only the *set* of parts that changed
since its last write (at most one entry per cabinet, chamber, rack, lot and section) and writes their current
value, at most every :data:`PUSH_MIN_S`. A slow browser gets fewer, fuller patches; a stuck one is dropped after
:data:`WRITE_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from formation.feed.display.state import FeedView, Part

#: The shortest wall time between two patches to one browser: changes in between are coalesced.
PUSH_MIN_S = 0.2
#: A stream with nothing to say sends a comment this often, so proxies and browsers keep it open.
KEEPALIVE_S = 15.0
#: A browser that takes longer than this to accept a write is dropped (it reconnects and gets a snapshot).
WRITE_TIMEOUT_S = 20.0
#: How long a client may take to send its request line and headers, and how large they may be.
REQUEST_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 16_384
#: The browser's reconnect delay after a lost stream (EventSource ``retry``), milliseconds.
RETRY_MS = 2000

#: Nothing on the page may come from anywhere but this server; inline style and script are the page itself.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout"}


class _Stream:
    """One browser's event stream: what changed since its last write."""

    def __init__(self) -> None:
        self.dirty: set[Part] = set()
        self.wake = asyncio.Event()

    def mark(self, parts: set[Part]) -> None:
        self.dirty |= parts
        self.wake.set()


class DisplayServer:
    """Serves the page, the event stream and the snapshot of one :class:`FeedView`; an async context manager."""

    def __init__(self, view: FeedView, page: bytes, host: str, port: int, now_s: Callable[[], float]) -> None:
        self.view = view
        self.page = page
        self.host = host
        self.port = port
        self._now_s = now_s
        self._server: asyncio.Server | None = None
        self._streams: set[_Stream] = set()
        self._handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._closing = False
        #: Each part's JSON, made once for every browser and dropped when the part changes (health is never kept:
        #: it depends on the time).
        self._json: dict[Part, bytes] = {}

    async def __aenter__(self) -> DisplayServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEADER_BYTES)
        # Port 0 asks for any free port: report the one the system gave.
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        # Before 3.12 Server.wait_closed() does not wait for open connections, and a cancelled handler makes
        # asyncio log an error: end each connection instead (its handler then returns) and wait for the handlers.
        for stream in self._streams:
            stream.wake.set()
        for writer in self._handlers.values():
            writer.transport.abort()
        handlers = list(self._handlers)
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=5.0)
            for task in late:  # pragma: no cover - a handler that ignored its closed connection
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def streams(self) -> int:
        """How many browsers are connected to the event stream."""
        return len(self._streams)

    def notify(self, parts: set[Part]) -> None:
        """Tell every connected stream that ``parts`` changed."""
        if parts:
            for part in parts:
                self._json.pop(part, None)
            for stream in self._streams:
                stream.mark(parts)

    def patch_json(self, parts: set[Part]) -> bytes:
        """The JSON of :meth:`FeedView.patch` for ``parts``, built from each part's JSON made once."""
        now_s = self._now_s()
        single: list[bytes] = []
        named: dict[str, list[bytes]] = {}
        for part in sorted(parts):
            fragment = self._json.get(part)
            if fragment is None:
                fragment = _json(self.view.part(part, now_s))
                if part[0] != "health":
                    self._json[part] = fragment
            section, name = part
            if name:
                named.setdefault(section, []).append(_json(name) + b":" + fragment)
            else:
                single.append(_json(section) + b":" + fragment)
        single += [_json(section) + b":{" + b",".join(items) + b"}" for section, items in named.items()]
        return b"{" + b",".join(single) + b"}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"display-http-{id(writer):x}")
            self._handlers[task] = writer
        try:
            if not self._closing:
                await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the browser went away or stalled, or the server is closing: nothing to answer
        finally:
            if task is not None:
                self._handlers.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            await _respond(writer, 408, b"request timeout\n")
            return
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            await _respond(writer, 400, b"bad request\n")
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await _respond(writer, 400, b"bad request\n")
            return
        method, target = parts[0], parts[1]
        path = urlsplit(target).path
        if path not in ("/", "/events", "/state.json"):
            await _respond(writer, 404, b"not found\n", head_only=method == "HEAD")
            return
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, b"method not allowed\n", extra={"Allow": "GET, HEAD"})
            return
        head_only = method == "HEAD"
        if path == "/":
            await _respond(writer, 200, self.page, "text/html; charset=utf-8", head_only=head_only)
        elif path == "/state.json":
            body = _json(self.view.snapshot(self._now_s()))
            await _respond(writer, 200, body, "application/json", head_only=head_only)
        elif head_only:
            await _respond(writer, 200, b"", "text/event-stream", head_only=True)
        else:
            await self._stream(writer)

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        """Push the snapshot, then patches, until the browser goes away or the server closes."""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
            b"Connection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n"
        )
        stream = _Stream()
        self._streams.add(stream)
        try:
            first = self.view.snapshot(self._now_s())
            await self._send(writer, f"retry: {RETRY_MS}\n".encode() + _event("snapshot", first))
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KEEPALIVE_S):
                        await stream.wake.wait()
                if self._closing:
                    break
                if not stream.wake.is_set():
                    await self._send(writer, b": keepalive\n\n")
                    continue
                stream.wake.clear()
                parts, stream.dirty = stream.dirty, set()
                await self._send(writer, b"event: patch\ndata: " + self.patch_json(parts) + b"\n\n")
                await asyncio.sleep(PUSH_MIN_S)
        finally:
            self._streams.discard(stream)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _event(name: str, value: Any) -> bytes:
    # JSON from json.dumps holds no raw newline, so the data fits on one "data:" line.
    return b"event: " + name.encode() + b"\ndata: " + _json(value) + b"\n\n"


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    head_only: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        "Connection": "close",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": _CSP,
        **(extra or {}),
    }
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + (b"" if head_only else body))
    await writer.drain()
