"""Render a resolved testnet into a directory that `compose up` runs as is.

Output (all paths relative, so the directory can be moved):

    OUT/docker-compose.yml          from docker-compose.yml.j2 at the repo root
    OUT/testnet.json                the resolved model (Testnet.load(OUT) reads it back)
    OUT/nodes/<name>/node.toml      templates/node.toml.j2 (docs/contracts.md section 1)
    OUT/nodes/<name>/node.key       the node's Ed25519 key, libp2p protobuf encoding
    OUT/nodes/<name>/netsetup.sh    templates/netsetup.sh.j2 (routes, loss, latency)
    OUT/routers/<router>/router.sh  templates/router.sh.j2 (NAT rules)

A node with `impl: rust` differs only in its compose service's image (the rust node image,
harness/infra/rust_image.py) and command (the rust binary on the same node.toml).

Deterministic: the same topology, name, overrides and images give byte-identical files (keys
are derived from the testnet and node names; nothing depends on time or dict order), which is
what the golden tests check.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jinja2

from harness.errors import SentrynetError
from harness.infra import delayer, natrules
from harness.infra.code_mount import CodeTree
from harness.infra.rust_image import RUST_BINARY_IN_IMAGE
from harness.model.testnet import TESTNET_FILE, Node, Testnet
from node.config import section_defaults

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEMPLATE = "docker-compose.yml.j2"
OWNED = ("docker-compose.yml", TESTNET_FILE, "nodes", "routers", "ctlgw")

# Node config values the contract documents (docs/contracts.md section 1), written explicitly
# so a rendered node.toml is complete and readable on its own; the values are the node's own
# defaults (node/config.py), so the two cannot drift.
P2P_DEFAULTS = section_defaults("p2p", ("max_connections", "discovery"))
RELAY_DEFAULTS = section_defaults(
    "relay",
    (
        "max_reservations_held",
        "max_reservations",
        "max_circuits_per_peer",
        "circuit_duration_s",
        "circuit_bytes",
        "reservation_ttl_s",
    ),
)
DCUTR_DEFAULTS = section_defaults("dcutr", ("enabled", "max_attempts"))
CONFIG_DIR = "/config"  # the node's rendered directory, mounted read-only
DATA_DIR = "/data"  # a named volume per node: survives restarts, removed by `down`
# What each implementation's container runs after netsetup.sh: both read the same node.toml.
NODE_COMMANDS = {
    "python": f"python -m node --config {CONFIG_DIR}/node.toml",
    "rust": f"{RUST_BINARY_IN_IMAGE} --config {CONFIG_DIR}/node.toml",
}


def toml_value(value: Any) -> str:
    """One TOML value (strings, numbers, booleans, lists of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML value")


def node_config(testnet: Testnet, node: Node) -> dict[str, dict[str, Any]]:
    """The node's config as sections -> keys, extra topology `config:` merged last."""
    relay_on = node.relay_mode != "off"
    cfg: dict[str, dict[str, Any]] = {
        "node": {
            "name": node.name,
            "role": node.role,
            "key_file": f"{CONFIG_DIR}/node.key",
            "data_dir": DATA_DIR,
        },
        "p2p": {
            "listen_addrs": list(node.listen_addrs),
            "persistent_peers": list(node.persistent_peer_addrs),
            **P2P_DEFAULTS,
        },
        "relay": {
            "enabled": relay_on,
            "mode": node.relay_mode if relay_on else "client",
            "relay_servers": list(node.relay_server_addrs),
            **RELAY_DEFAULTS,
        },
        "dcutr": dict(DCUTR_DEFAULTS),
        "chain": {
            "validators": list(testnet.validators),
            "block_interval_s": float(testnet.block_interval_s),
            "serve_sync": node.serve_sync,
            "validator_ids": dict(testnet.validator_ids),
        },
        "api": {"listen": f"{node.control_ip}:9000"},
    }
    for section, body in node.config.items():
        merged = cfg.setdefault(section, {})
        for key, value in body.items():
            merged[key] = value
    # sub-tables (validator_ids) must follow the section's plain keys
    for section, body in cfg.items():
        cfg[section] = dict(sorted(body.items(), key=lambda kv: isinstance(kv[1], dict)))
    return cfg


def _env(root: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(root / "templates"), str(root)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, TOML and shell, not HTML
    )
    env.filters["toml"] = toml_value
    return env


def _net_context(testnet: Testnet, addresses: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    used: set[str] = set()
    for name, ip in addresses.items():
        net = testnet.network(name)
        var = name.upper().replace("-", "_")
        if var in used:  # `a-b` and `a_b` on one node: keep the shell variables apart
            var = f"{var}_{len(used)}"
        used.add(var)
        out.append(
            {
                "name": name,
                "ip": ip,
                "kind": net.kind,
                "var": var,
                "loss_pct": net.loss_pct,
                "probability": f"{net.loss_pct / 100:.4f}",
                "latency_ms": _num(net.latency_ms),
                "jitter_ms": _num(net.jitter_ms),
                "rate_kbit": net.rate_kbit,
                "burst": tbf_burst(net.rate_kbit) if net.rate_kbit else None,
            }
        )
    return out


def _num(x: float) -> float | int:
    """3.0 -> 3 (what the scripts print), 2.5 stays."""
    return int(x) if x == int(x) else x


def tbf_burst(kbit: int) -> int:
    """Bytes a token bucket at `kbit` may send at once: 20 ms worth, at least two full
    frames (below one frame tbf stalls; too large a bucket is no limit)."""
    return max(3028, kbit * 1000 // 8 // 50)


def _prepare(out: Path) -> None:
    """Refuse to write into a directory we did not render; clear what a previous render made."""
    if out.exists() and not out.is_dir():
        raise SentrynetError(f"--out {out}: a file, not a directory; choose a new directory")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise SentrynetError(f"--out {out}: {blocked} is a file; choose a directory path")
    if out.exists() and any(out.iterdir()) and not (out / TESTNET_FILE).exists():
        raise SentrynetError(
            f"{out}: not empty and not a rendered testnet (no {TESTNET_FILE}); "
            "choose an empty or new directory with --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def own_command(testnet: Testnet, node: Node) -> list[str] | None:
    """The command of anyone's own node (`image:` + `command:`) with its placeholders
    (harness/model/topology.py COMMAND_PLACEHOLDERS) replaced by what render decided;
    None: sentrynet's own node, or the image's own command."""
    if node.command is None:
        return None
    facts = {
        "config": f"{CONFIG_DIR}/node.toml",
        "key": f"{CONFIG_DIR}/node.key",
        "data": DATA_DIR,
        "name": node.name,
        "ip": next(iter(node.addresses.values())),
        "port": str(node.p2p_port),
        "listen": node.listen_addrs[0],
        "listen_addrs": ",".join(node.listen_addrs),
        "relay_servers": ",".join(node.relay_server_addrs),
        "persistent_peers": ",".join(node.persistent_peer_addrs),
        "peer_id": node.peer_id,
        "api": f"{node.control_ip}:9000",
    }
    return [arg.format_map(facts) for arg in node.command]


def node_images(testnet: Testnet, image: str, rust_image: str | None) -> dict[str, str]:
    """impl -> the image its nodes run; a testnet with rust nodes needs the rust image."""
    if testnet.rust_nodes and not rust_image:
        raise SentrynetError(
            f"testnet {testnet.name}: {', '.join(testnet.rust_nodes)} "
            f"{'has' if len(testnet.rust_nodes) == 1 else 'have'} `impl: rust`, but no rust "
            "node image was given; build it with `sentrynet images build` (needs cargo) or "
            "pass --rust-image"
        )
    return {"python": image, "rust": rust_image or ""}


# How long a router's `-ready` container waits for router.sh before it fails compose up with
# the router's name: twice what the healthcheck it replaced allowed (60 retries at 1 s).
ROUTER_READY_S = 120


def render(
    testnet: Testnet,
    out_dir: str | Path,
    image: str,
    root: Path | None = None,
    rust_image: str | None = None,
    code: CodeTree | None = None,
) -> list[Path]:
    """Write every file of the testnet into out_dir; returns the paths written, sorted.

    `image` runs the routers and the Python nodes, `rust_image` the `impl: rust` nodes.
    `code`: the Python nodes read `image`'s code from this extracted tree
    (harness/infra/code_mount.py; `up` passes it where image layers are slow to read)."""
    from harness.model.keys import node_key

    images = node_images(testnet, image, rust_image)
    root = root or REPO_ROOT
    env = _env(root)
    out = Path(out_dir)
    _prepare(out)
    written: list[Path] = []

    def write(rel: str, data: str | bytes, mode: int = 0o644) -> None:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        path.chmod(mode)
        written.append(path)

    compose = env.get_template(COMPOSE_TEMPLATE).render(
        testnet=testnet,
        image=image,
        node_images=images,
        node_commands=NODE_COMMANDS,
        own_commands={n.name: own_command(testnet, n) for n in testnet.nodes},
        router_ready_s=ROUTER_READY_S,
        code_volumes=code.volumes() if code else [],
    )
    write("docker-compose.yml", compose)
    write(TESTNET_FILE, testnet.to_json())
    if testnet.control_gateway is not None:
        write("ctlgw/ctlproxy.py", (root / "templates" / "ctlproxy.py").read_text())

    node_tpl = env.get_template("node.toml.j2")
    net_tpl = env.get_template("netsetup.sh.j2")
    for node in testnet.nodes:
        base = f"nodes/{node.name}"
        write(
            f"{base}/node.toml",
            node_tpl.render(
                config=node_config(testnet, node), source=testnet.source, testnet=testnet.name
            ),
        )
        key = node_key(testnet.name, node.name)
        if key.peer_id != node.peer_id:  # testnet.json edited by hand or a stale model
            raise SentrynetError(f"{node.name}: peer id does not match its derived key; re-render")
        write(f"{base}/node.key", key.private_key)
        nets = _net_context(testnet, node.addresses)
        default_var = None
        if node.router:
            via = testnet.router(node.router).network
            default_var = next(n["var"] for n in nets if n["name"] == via)
        write(
            f"{base}/netsetup.sh",
            net_tpl.render(node=node, testnet=testnet.name, nets=nets, default_var=default_var),
            0o755,
        )
        if any(n["latency_ms"] > 0 for n in nets) or any(k.latency_ms > 0 for k in node.links):
            write(f"{base}/{delayer.SCRIPT_NAME}", delayer.DELAYER)
    router_tpl = env.get_template("router.sh.j2")
    for router in testnet.routers:
        nets = _net_context(
            testnet, {router.network: router.private_ip, router.public_network: router.public_ip}
        )
        for n in nets:  # shell variable holding the interface (PRIV_IF / PUB_IF)
            n["var"] = "PRIV_IF" if n["name"] == router.network else "PUB_IF"
        inside = natrules.inside_nodes(testnet, router)
        if any(n["latency_ms"] > 0 for n in nets):
            write(f"routers/{router.name}/{delayer.SCRIPT_NAME}", delayer.DELAYER)
        lan = testnet.network(router.network).subnet
        write(
            f"routers/{router.name}/router.sh",
            router_tpl.render(
                router=router,
                testnet=testnet.name,
                nets=nets,
                lan=lan,
                cone_table=natrules.table(
                    router.nat,
                    inside,
                    router.public_ip,
                    lan,
                    router.hairpin,
                    router.mapping_timeout_s,
                ),
                cone_note=natrules.describe(router.nat, inside),
            ),
            0o755,
        )
    return sorted(written)
