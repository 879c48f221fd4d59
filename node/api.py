"""HTTP API: GET /status, GET /events?since=N, GET /metrics (docs/contracts.md section 2).

Served on [api] listen (the control network, never a p2p address) by a small asyncio
HTTP/1.0 server in its own thread, so that clients cannot starve it: a thread per
connection (http.server's ThreadingHTTPServer, used before) let 400 half-sent requests hold
400 threads for over a minute, and a backlog of 5 made bursts wait. Here a connection costs
a coroutine, not a thread; every connection has a deadline for its request
(REQUEST_TIMEOUT_S), requests are capped (MAX_REQUEST_BYTES), open connections are capped
(MAX_CONNECTIONS: beyond it a new one is closed at once), the listen backlog is BACKLOG, and
a client that hangs up early is simply gone (no traceback). One request per connection,
answered with `Connection: close`, which is what the harness and Prometheus send.

Handlers only read: the status callable builds a JSON snapshot, the event log and the
metrics registry are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

from node.events import EventLog
from node.metrics import Metrics

log = logging.getLogger("sentrynet.api")

REQUEST_TIMEOUT_S = 5.0  # from accept to the end of the request head
MAX_REQUEST_BYTES = 8192  # request line and headers
MAX_CONNECTIONS = 1024  # open at once; more are closed on accept
BACKLOG = 128
JSON = "application/json"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
REASONS.update({500: "Internal Server Error"})


class APIServer:
    def __init__(
        self,
        listen: tuple[str, int],
        status: Callable[[], dict[str, Any]],
        events: EventLog,
        metrics: Metrics,
    ) -> None:
        self._status = status
        self._events = events
        self._metrics = metrics
        # bind now: a taken port fails the node's start, not a background thread
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self._sock = socket.create_server(listen, family=family, backlog=BACKLOG)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._open = 0

    # ---- what is served --------------------------------------------------------------
    def status_json(self) -> dict[str, Any]:
        # the status builder reads structures trio tasks mutate; retry a torn read
        for _ in range(5):
            try:
                return self._status()
            except RuntimeError:
                continue
        return self._status()

    def respond(self, method: str, target: str) -> tuple[int, bytes, str]:
        """(status code, body, content type) for one request."""
        if method != "GET":
            return 405, b'{"error": "only GET"}', JSON
        url = urlparse(target)
        try:
            if url.path == "/status":
                return 200, json.dumps(self.status_json()).encode(), JSON
            if url.path == "/events":
                try:
                    since = int(parse_qs(url.query).get("since", ["0"])[0])
                except ValueError:
                    return 400, b'{"error": "since must be an integer"}', JSON
                nxt, evs = self._events.since(since)
                doc = {"next": nxt, "events": [e.to_json() for e in evs]}
                return 200, json.dumps(doc).encode(), JSON
            if url.path == "/metrics":
                return 200, self._metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
            return 404, b'{"error": "not found"}', JSON
        except Exception as exc:  # never kill the server
            log.exception("API error on %s", target)
            return 500, json.dumps({"error": str(exc)}).encode(), JSON

    # ---- the server ------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                return
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=REQUEST_TIMEOUT_S
                )
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return  # too slow, or gone before the request ended: nothing to answer
            except asyncio.LimitOverrunError:
                await self._write(writer, 400, b'{"error": "request too large"}', JSON)
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                await self._write(writer, 400, b'{"error": "bad request line"}', JSON)
                return
            await self._write(writer, *self.respond(parts[0], parts[1]))
        finally:
            self._open -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _write(
        self, writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str
    ) -> None:
        head = (
            f"HTTP/1.0 {code} {REASONS.get(code, 'Error')}\r\nServer: sentrynet-node\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(head.encode("latin-1") + body)
            await asyncio.wait_for(writer.drain(), timeout=REQUEST_TIMEOUT_S)

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(
            self._handle, sock=self._sock, limit=MAX_REQUEST_BYTES, backlog=BACKLOG
        )
        ready.set()
        async with server:
            await self._stopped.wait()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(ready)), name="sentrynet-api", daemon=True
        )
        self._thread.start()
        ready.wait(timeout=10)

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._sock.close()
