"""HTTP API: GET /status, GET /events?since=N, GET /metrics (docs/contracts.md section 2).

Served from a ThreadingHTTPServer thread on [api] listen (the control network, never a
p2p address). Handlers only read: the status callable builds a JSON snapshot, the event
log and the metrics registry are thread-safe.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from node.events import EventLog
from node.metrics import Metrics

log = logging.getLogger("sentrynet.api")


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
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "sentrynet-node"

            def log_message(self, format: str, *args: Any) -> None:  # quiet access log
                return

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                try:
                    if url.path == "/status":
                        body = json.dumps(api.status_json()).encode()
                        self._send(200, body, "application/json")
                    elif url.path == "/events":
                        qs = parse_qs(url.query)
                        try:
                            since = int(qs.get("since", ["0"])[0])
                        except ValueError:
                            self._send(
                                400, b'{"error": "since must be an integer"}', "application/json"
                            )
                            return
                        nxt, evs = api._events.since(since)
                        doc = {"next": nxt, "events": [e.to_json() for e in evs]}
                        self._send(200, json.dumps(doc).encode(), "application/json")
                    elif url.path == "/metrics":
                        self._send(
                            200, api._metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
                        )
                    else:
                        self._send(404, b'{"error": "not found"}', "application/json")
                except Exception as exc:  # never kill the API thread
                    log.exception("API error on %s", self.path)
                    self._send(500, json.dumps({"error": str(exc)}).encode(), "application/json")

        self.httpd = ThreadingHTTPServer(listen, Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def status_json(self) -> dict[str, Any]:
        # the status builder reads structures trio tasks mutate; retry a torn read
        for _ in range(5):
            try:
                return self._status()
            except RuntimeError:
                continue
        return self._status()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="sentrynet-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
