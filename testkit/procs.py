"""Launch real node processes on loopback and poll their HTTP API (for tests and benches).

    with NodeProcs(tmp_path) as procs:
        relay = procs.start("relay", relay={"enabled": True, "mode": "server"})
        client = procs.start("client", relay={"enabled": True, "mode": "client",
                                              "relay_servers": [relay.p2p_addr]})
        wait_for(client, lambda s: s["reservations"], "a reservation")

Every node gets its own 127.0.0.x address and free ports; configs are written to
tmp_path. `wait_for` polls with a deadline (tenacity) and on timeout raises with the last
status seen and the tail of the node's log.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

_ip_counter = itertools.count(2)
REPO = Path(__file__).resolve().parent.parent


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def next_ip() -> str:
    """A fresh 127.0.0.x so each node has its own address (x in 2..250)."""
    n = next(_ip_counter)
    return f"127.0.{(n // 250) % 250}.{n % 250 + 2}"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot render {v!r}")


def render_toml(doc: dict[str, dict[str, Any]]) -> str:
    out: list[str] = []
    for section, values in doc.items():
        out.append(f"[{section}]")
        subtables = {}
        for k, v in values.items():
            if isinstance(v, dict):
                subtables[k] = v
            else:
                out.append(f"{k} = {toml_value(v)}")
        for k, sub in subtables.items():
            out.append(f"[{section}.{k}]")
            for kk, vv in sub.items():
                out.append(f"{kk} = {toml_value(vv)}")
        out.append("")
    return "\n".join(out)


def write_node_config(
    d: Path, name: str, listen: str, api: str, sections: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], Path]:
    """Write `d`/node.toml for node `name` (p2p on the multiaddr `listen`, API on `api`,
    ip:port; key and data in `d`), `sections` merged over those; return (config, path)."""
    d.mkdir(parents=True, exist_ok=True)
    doc: dict[str, dict[str, Any]] = {
        "node": {
            "name": name,
            "role": "full",
            "key_file": str(d / "node.key"),
            "data_dir": str(d / "data"),
        },
        "p2p": {"listen_addrs": [listen]},
        "api": {"listen": api},
    }
    for sec, vals in sections.items():
        doc.setdefault(sec, {}).update(vals)
    path = d / "node.toml"
    path.write_text(render_toml(doc))
    return doc, path


@dataclass
class NodeProc:
    name: str
    ip: str
    p2p_port: int
    api_port: int
    config_path: Path
    log_path: Path
    config: dict[str, dict[str, Any]]
    proc: subprocess.Popen[bytes] | None = None
    last_status: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def p2p_addr(self) -> str:
        """The node's TCP address without a peer id."""
        return f"/ip4/{self.ip}/tcp/{self.p2p_port}"

    @property
    def api(self) -> str:
        return f"http://{self.ip}:{self.api_port}"

    @property
    def peer_id(self) -> str:
        return str(self.status()["peer_id"])

    @property
    def full_addr(self) -> str:
        return f"{self.p2p_addr}/p2p/{self.peer_id}"

    def get(self, path: str, timeout: float = 3.0) -> bytes:
        with urllib.request.urlopen(self.api + path, timeout=timeout) as r:
            return bytes(r.read())

    def status(self) -> dict[str, Any]:
        st = json.loads(self.get("/status"))
        self.last_status = st
        return st

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return list(json.loads(self.get(f"/events?since={since}"))["events"])

    def metrics(self) -> str:
        return self.get("/metrics").decode()

    def metric(self, name: str, **labels: str) -> float:
        """Value of one sample (0.0 when absent), e.g. metric('sentrynet_circuits_total',
        outcome='opened')."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            key, _, val = line.rpartition(" ")
            if "{" in key:
                mname, _, rest = key.partition("{")
                got = ",".join(sorted(rest.rstrip("}").split(","))) if rest.rstrip("}") else ""
            else:
                mname, got = key, ""
            if mname == name and got == want:
                return float(val)
        return 0.0

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class WaitTimeout(AssertionError):
    pass


def _poll(attempt: Callable[[], Any], timeout: float, interval: float) -> Any:
    """Call attempt() until it returns non-None; RetryError after `timeout` seconds."""
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda r: r is None),
    )
    return retrying(attempt)


def wait_for(
    node: NodeProc,
    predicate: Callable[[dict[str, Any]], Any],
    what: str,
    timeout: float = 20.0,
    interval: float = 0.1,
) -> Any:
    """Poll node /status until predicate(status) is truthy; return that value.

    On timeout raise with what was awaited, the last status seen and the log tail.
    """

    def attempt() -> Any:
        try:
            st = node.status()
        except OSError:
            return None
        try:
            return predicate(st) or None
        except (KeyError, IndexError, TypeError):
            return None

    try:
        return _poll(attempt, timeout, interval)
    except RetryError:
        alive = "running" if node.alive() else f"exited rc={node.proc and node.proc.poll()}"
        raise WaitTimeout(
            f"{node.name}: no {what} within {timeout}s ({alive}).\n"
            f"last /status: {json.dumps(node.last_status, indent=1)[:6000]}\n"
            f"log tail:\n{node.log_tail()}"
        ) from None


def wait_until(
    check: Callable[[], Any], what: str, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Poll an arbitrary check until it returns a truthy value (or raise naming `what`)."""
    last: list[Any] = [None]

    def attempt() -> Any:
        try:
            r = check()
        except (OSError, KeyError, IndexError, TypeError, ValueError) as exc:
            last[0] = repr(exc)
            return None
        last[0] = r
        return r or None

    try:
        return _poll(attempt, timeout, interval)
    except RetryError:
        raise WaitTimeout(f"no {what} within {timeout}s; last seen: {last[0]!r}") from None


class NodeProcs:
    """Start and always stop a set of node processes under one tmp directory."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.nodes: dict[str, NodeProc] = {}

    def __enter__(self) -> NodeProcs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        for n in self.nodes.values():
            try:
                n.stop()
            except Exception:
                n.kill()

    def write_config(self, name: str, **sections: dict[str, Any]) -> NodeProc:
        """Write a config (node/p2p/api filled in) without starting the node."""
        if name in self.nodes:
            node = self.nodes[name]
            ip, p2p_port, api_port = node.ip, node.p2p_port, node.api_port
        else:
            ip = next_ip()
            p2p_port, api_port = free_port(ip), free_port(ip)
            while api_port == p2p_port:  # the kernel may hand out the same free port twice
                api_port = free_port(ip)
        d = self.tmp / name
        doc, path = write_node_config(
            d, name, f"/ip4/{ip}/tcp/{p2p_port}", f"{ip}:{api_port}", sections
        )
        node = NodeProc(name, ip, p2p_port, api_port, path, d / "node.log", doc)
        self.nodes[name] = node
        return node

    def start(self, name: str, *, wait_ready: bool = True, **sections: dict[str, Any]) -> NodeProc:
        node = (
            self.write_config(name, **sections)
            if sections or name not in self.nodes
            else self.nodes[name]
        )
        return self.launch(node, wait_ready)

    def launch(
        self, node: NodeProc, wait_ready: bool = True, code_dir: Path | None = None
    ) -> NodeProc:
        """Start `node`'s process; with `code_dir`, its `node` package comes from there (a
        directory holding another revision's node/, first on PYTHONPATH: the venv's
        editable install finds the checkout's only after sys.path), the rest from the venv."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if code_dir is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(code_dir), os.environ.get("PYTHONPATH", "")) if p
            )
        logf = open(node.log_path, "ab")  # noqa: SIM115 (owned by the process)
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "--config", str(node.config_path)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=str(code_dir or REPO),
            env=env,
        )
        logf.close()
        if wait_ready:
            wait_for(node, lambda s: s.get("ready") and s.get("peer_id"), "ready node", 30)
        return node


def elapsed(t0: float) -> float:
    return round(time.monotonic() - t0, 3)
