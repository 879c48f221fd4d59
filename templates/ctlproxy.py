"""The control gateway of a multi-host testnet: an HTTP proxy from the harness's host to the
node APIs on the control overlay (docs/multi-host.md).

Runs in a container of the node image on the harness's engine, on the control overlay and
on a local bridge the harness's host is on. The harness sends its API requests here in
absolute form (`GET http://10.250.7.12:9000/status`); each is forwarded to that address
and the answer streamed back. Only addresses inside the control subnet are forwarded: the
proxy is no way to anywhere else. Standard library only.

    python3 ctlproxy.py LISTEN_IP PORT CONTROL_SUBNET
"""

from __future__ import annotations

import http.client
import ipaddress
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TIMEOUT_S = 30.0
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


class Proxy(BaseHTTPRequestHandler):
    subnet: ipaddress.IPv4Network
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            ip = ipaddress.ip_address(url.hostname or "")
        except ValueError:
            ip = None
        if url.scheme != "http" or ip is None or ip not in self.subnet:
            self.send_error(403, f"only http://<address in {self.subnet}>/ is forwarded")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        target = url.path + (f"?{url.query}" if url.query else "")
        conn = http.client.HTTPConnection(str(ip), url.port or 80, timeout=TIMEOUT_S)
        try:
            conn.request(self.command, target or "/", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            # the harness reads this header to tell "connection refused" from other errors
            said = f"{ip}:{url.port}: {exc}"
            self.send_response(502, "Bad Gateway")
            self.send_header("X-Sentrynet-Gateway", said)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per poll would drown the container's log


def main() -> None:
    listen_ip, port, subnet = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Proxy.subnet = ipaddress.IPv4Network(subnet)
    server = ThreadingHTTPServer((listen_ip, port), Proxy)
    server.daemon_threads = True
    bound = server.server_address[1]
    print(f"control gateway: {listen_ip}:{bound} -> {subnet}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
