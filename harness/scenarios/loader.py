"""Scenario files: a run as data, validated as strictly as topologies are.

A scenario file (scenarios/library/<name>.yaml; docs/scenarios.md has the whole format)::

    name: sentry                     # optional; when given, the file's stem
    description: one line            # `sentrynet scenario list` shows it
    topology: sentry                 # scenarios/<name>.yaml, a path (x.yaml, relative to
                                     # this file), or the topology itself inline (a mapping)
    conclusion: seed-rust            # optional: a registered conclusion (actions.CONCLUSIONS)
    impls: [python, rust]            # optional: the implementations `make test` runs it
                                     # with (default [python]); `sentrynet scenario NAME
                                     # --impl rust` runs any file on any of IMPL_VARIANTS
    engines: [compose, swarm]        # optional: the engines `make test` runs each impl on
                                     # (default [compose]); `--engine swarm` runs any file
    steps:
      - check: reservations          # a registered check (CHECKS below)
        deadline: 120
      - check: cross_network_sync
        args: {node: validator in b} # arguments; node arguments are selectors
        expect: holds                # holds | fails | impossible
      - action: stop-and-wipe        # a registered action (ACTIONS below)
        node: validator in b
      - wait: advanced               # a condition, polled until it holds
        args: {min_blocks: 2, base_mark: stopped_heights}
        deadline: 90
      - wait: duration               # a plain wait, only where time is the subject
        seconds: 150
        because: span one reservation TTL
      - perturb: kill                # anything `sentrynet perturb` does
        node: all in b
      - mark: heights                # heights | addresses | time, into marks[as]
        as: before
      - repeat: 5                    # the steps 5 times (check rows get _1.._5)
        every: 12                    # optional: an iteration starts every 12 s
        steps: [...]
      - background: flapping link    # perturbations in a loop while the later steps run
        every: 20
        steps: [...]

Node selectors (wherever a node is asked for): a node name, or `[QUANT] [IMPL] [ROLE] [in
NET]` with QUANT all|every|first|one|any|last, IMPL python|rust, ROLE validator|full|sentry|
node (plural: all of them), e.g. `validator in b` (the first, in file order), `all in b`,
`rust validators`, `last sentry`; or a mapping {name, role, network, impl, pick}. They
resolve against the scenario's topology when the file is loaded, so a scenario never names
a node in code, and `sentrynet scenario check FILE` reports a selector that matches nothing.

Every problem is a ScenarioError: `FILE: FIELD: PROBLEM; FIX`, with "did you mean".
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.checks import Check, Observation, Verdict
from harness.checks import chain as chain_checks
from harness.checks import library as library_checks
from harness.checks import relay as relay_checks
from harness.checks.expect import impossible
from harness.errors import SentrynetError
from harness.model.fields import FieldReader
from harness.model.nat import ALIASES, PRESETS
from harness.model.testnet import DEFAULT_ENGINE, ENGINES
from harness.model.topology import (
    IMPL_SCOPES,
    IMPLS,
    ROLES,
    Topology,
    TopologyError,
    _StrictLoader,
    _suggest,
    load_topology,
    parse_topology,
    switch_impl,
)
from harness.run.setup import SCENARIO_DIR
from harness.run.steps import (
    ActionStep,
    BackgroundStep,
    CheckStep,
    RunContext,
    Scenario,
    Step,
    WaitStep,
)
from harness.scenarios import actions

LIBRARY_DIR = SCENARIO_DIR / "library"
RESERVED_NAMES = ("list", "check")  # `sentrynet scenario list|check`
SUFFIX = ".yaml"


class ScenarioError(SentrynetError):
    """A scenario file problem. str() is `FILE: FIELD: PROBLEM; FIX` on one line."""

    def __init__(self, file: str, fieldpath: str, problem: str, fix: str = "") -> None:
        self.file = file
        self.field = fieldpath
        self.problem = problem
        self.fix = fix
        where = f"{file}: {fieldpath}: " if fieldpath else f"{file}: "
        super().__init__(where + problem + (f"; {fix}" if fix else ""))


# ---------------------------------------------------------------------------------------
# registries: what a file may name
# ---------------------------------------------------------------------------------------
REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    """One argument of a registered check: kind node (one selector), nodes (a selector of
    any size), relay (one relay server), int, mark (a marks key), impl."""

    kind: str
    default: Any = REQUIRED


@dataclass(frozen=True)
class CheckKind:
    fn: Callable[..., Any]
    args: dict[str, Arg] = field(default_factory=dict)

    def build(self, kwargs: dict[str, Any]) -> Check:
        if not self.args:
            return self.fn
        return self.fn(**kwargs)


CHECKS: dict[str, CheckKind] = {
    "reservations": CheckKind(relay_checks.reservations),
    "relayed_circuit": CheckKind(relay_checks.relayed_circuit),
    "dcutr_upgrade": CheckKind(relay_checks.dcutr_upgrade),
    "dcutr_within_rtts": CheckKind(
        relay_checks.dcutr_within_rtts, {"base_s": Arg("seconds", 1.0), "rtts": Arg("count", 3.0)}
    ),
    "dcutr_upgrade_between": CheckKind(
        relay_checks.dcutr_upgrade_between, {"impl_a": Arg("impl"), "impl_b": Arg("impl")}
    ),
    "dcutr_upgrade_over": CheckKind(
        relay_checks.dcutr_upgrade_over, {"transport": Arg("transport")}
    ),
    "dcutr_upgrade_pair": CheckKind(
        relay_checks.dcutr_upgrade_pair, {"a": Arg("node"), "b": Arg("node")}
    ),
    "dcutr_fails": CheckKind(relay_checks.dcutr_fails),
    "reserved_elsewhere": CheckKind(relay_checks.reserved_elsewhere, {"relay": Arg("relay")}),
    "reservations_back": CheckKind(relay_checks.reservations_back, {"relay": Arg("relay")}),
    "reservations_on": CheckKind(relay_checks.reservations_on, {"relay": Arg("relay")}),
    "partitioned": CheckKind(relay_checks.partitioned),
    "consensus": CheckKind(
        chain_checks.consensus, {"min_blocks": Arg("int", 5), "base_mark": Arg("mark", None)}
    ),
    "cross_network_sync": CheckKind(chain_checks.cross_network_sync, {"node": Arg("node")}),
    "caught_up": CheckKind(chain_checks.caught_up, {"node": Arg("node")}),
    "no_forks": CheckKind(chain_checks.no_forks),
    "blocks_kept": CheckKind(chain_checks.blocks_kept),
    "converged": CheckKind(
        chain_checks.converged,
        {"min_blocks": Arg("int", 3), "base_mark": Arg("mark", "healed_heights")},
    ),
    "advanced": CheckKind(
        chain_checks.advanced,
        {"min_blocks": Arg("int"), "base_mark": Arg("mark"), "exclude": Arg("nodes", ())},
    ),
    # the bug library (harness/checks/library.py)
    "reserved_again": CheckKind(
        library_checks.reserved_again, {"node": Arg("node"), "since": Arg("mark")}
    ),
    "reservations_never_refused": CheckKind(library_checks.reservations_never_refused),
    "circuits_limited": CheckKind(
        library_checks.circuits_limited, {"min_closed": Arg("int", 1), "since": Arg("mark", None)}
    ),
    "one_direct_per_shared_endpoint": CheckKind(library_checks.one_direct_per_shared_endpoint),
    "reservations_refreshed": CheckKind(
        library_checks.reservations_refreshed,
        {"min_refreshes": Arg("int", 2), "since": Arg("mark", None)},
    ),
    "circuit_addrs_kept": CheckKind(
        library_checks.circuit_addrs_kept, {"since": Arg("mark", None)}
    ),
    "circuit_dial_ok": CheckKind(library_checks.circuit_dial_ok, {"probe": Arg("mark")}),
    "reservations_recovered": CheckKind(
        library_checks.reservations_recovered,
        {"network": Arg("private_network"), "since": Arg("mark")},
    ),
    "advertised_while_reserved": CheckKind(library_checks.advertised_while_reserved),
    "circuit_addrs_withdrawn": CheckKind(
        library_checks.circuit_addrs_withdrawn, {"relay": Arg("relay"), "within": Arg("int", 30)}
    ),
    "identify_agrees": CheckKind(library_checks.identify_agrees, {"probe": Arg("mark")}),
    "forward_dial_ok": CheckKind(library_checks.forward_dial_ok, {"probe": Arg("mark")}),
    "connection_lost": CheckKind(
        library_checks.connection_lost,
        {"node": Arg("node"), "peer": Arg("node"), "since": Arg("mark")},
    ),
    "back_at_configured_address": CheckKind(
        library_checks.back_at_configured_address,
        {"node": Arg("node"), "relay": Arg("relay"), "since": Arg("mark")},
    ),
}

# The mark-recording actions: name -> (argument kinds, factory(resolved args), label).
ActionFactory = Callable[[dict[str, Any]], Callable[[RunContext], str]]
ACTIONS: dict[str, tuple[dict[str, Arg], ActionFactory, Callable[[dict[str, Any]], str]]] = {
    "stop-and-wipe": (
        {"node": Arg("node")},
        lambda a: actions.stop_and_wipe(a["node"]),
        lambda a: f"stop {a['node']} and wipe its block store",
    ),
    "start": (
        {"node": Arg("node"), "sync_target": Arg("bool", False)},
        lambda a: actions.start_node(a["node"], sync_target=a["sync_target"]),
        lambda a: f"start {a['node']}" + (" with an empty store" if a["sync_target"] else ""),
    ),
    "kill-relay": (
        {"node": Arg("relay")},
        lambda a: actions.kill_relay(a["node"]),
        lambda a: f"kill relay {a['node']}",
    ),
    "partition": (
        {"networks": Arg("network_pair"), "cut": Arg("node")},
        lambda a: actions.partition(a["networks"][0], a["networks"][1], a["cut"]),
        lambda a: "partition {} | {}".format(*a["networks"]),
    ),
    "heal": (
        {"networks": Arg("network_pair"), "cut": Arg("node")},
        lambda a: actions.heal(a["networks"][0], a["networks"][1], a["cut"]),
        lambda a: "heal {} | {}".format(*a["networks"]),
    ),
    "probe": (
        {
            "from": Arg("node"),
            "node": Arg("node"),
            "via": Arg("relay"),
            "mode": Arg("probe_mode", "dial"),
            "as": Arg("mark"),
        },
        lambda a: actions.probe(a["from"], a["node"], a["via"], a["mode"], a["as"]),
        lambda a: f"probe {a['mode']} from {a['from']}: {a['node']} through {a['via']}",
    ),
    "probe-forward": (
        {"from": Arg("node"), "node": Arg("node"), "as": Arg("mark")},
        lambda a: actions.probe_forward(a["from"], a["node"], a["as"]),
        lambda a: f"probe dial from {a['from']}: {a['node']} at its router's port forward",
    ),
    "analyse-reach": (
        {"node": Arg("node")},
        lambda a: actions.analyse_reach(a["node"]),
        lambda a: "analyse reachability (harness/model/reach.py)",
    ),
}

# The perturbations (harness/run/perturb.py, as `sentrynet perturb`): their arguments.
PERTURB_ARGS: dict[str, dict[str, Arg]] = {
    **{k: {"node": Arg("nodes")} for k in actions.CONTAINER_ACTIONS},
    **{k: {"node": Arg("nodes"), "network": Arg("network")} for k in actions.LINK_ACTIONS},
    "partition": {"networks": Arg("network_pair")},
    "heal": {"networks": Arg("network_pair")},
    "nat": {"network": Arg("private_network"), "nat": Arg("nat"), "flush": Arg("bool", True)},
    "rebind": {"network": Arg("private_network")},
    "loss": {"network": Arg("network"), "pct": Arg("pct")},
    "latency": {"network": Arg("network"), "ms": Arg("ms"), "jitter": Arg("ms", 0.0)},
    "rate": {"network": Arg("network"), "kbit": Arg("int")},
    "cpu": {"node": Arg("nodes"), "cores": Arg("cores")},
    "clear": {},
}

EXPECTS = ("holds", "fails", "impossible")
TRANSPORTS = ("tcp", "quic")  # what a node listens on (topology `transports:`)
REACH_KEYS = ("relayed_circuit", "cross_network_sync")  # what analyse-reach records
KINDS = ("check", "wait", "perturb", "action", "mark", "repeat", "background")
TOP_KEYS = (
    "name",
    "description",
    "topology",
    "conclusion",
    "impls",
    "engines",
    "tested_by",
    "steps",
)

# ---------------------------------------------------------------------------------------
# the implementation parameter (`--impl`, `impls:`)
# ---------------------------------------------------------------------------------------
# IMPL switches every node of the topology that pins neither `impl:` nor `image:`;
# IMPL:clients only the relay clients (relay_mode off|client), IMPL:relays only the relay
# servers (harness/model/topology.py switch_impl). python is the file as written.
DEFAULT_IMPL = "python"
IMPL_VARIANTS: tuple[str, ...] = (
    *IMPLS,
    *(f"{i}:{s}" for i in IMPLS for s in IMPL_SCOPES if s != "all"),
)
# What an implementation accepts in node.toml but does not do: a switched node whose
# topology `config:` sets such a key would run a different scenario than the file says, so
# loading refuses it (pin the node, or drop the key). From peers/rust/README.md and
# peers/rust/src/config.rs (type-checked, never read).
IMPL_IGNORED_CONFIG: dict[str, dict[str, str]] = {
    "rust": {
        "p2p.ping_failures": "the rust node keeps a connection whatever ping says",
        "dcutr.max_attempts": "rust-libp2p's DCUtR makes its own attempts (3)",
    },
}


def split_impl(variant: str) -> tuple[str, str]:
    """`rust:clients` -> ("rust", "clients"); `rust` -> ("rust", "all")."""
    impl, _, scope = variant.partition(":")
    return impl, scope or "all"


STEP_KEYS: dict[str, tuple[str, ...]] = {
    "check": (
        "check",
        "name",
        "args",
        "deadline",
        "expect",
        "reason",
        "decisive",
        "reach",
        "requires",
        "always",
        "likely_cause",
    ),
    "wait": ("wait", "what", "args", "deadline", "likely_cause", "requires", "seconds", "because"),
    "perturb": (
        "perturb",
        "what",
        "node",
        "network",
        "networks",
        "nat",
        "flush",
        "pct",
        "ms",
        "cores",
    ),
    "action": (
        "action",
        "what",
        "node",
        "sync_target",
        "networks",
        "cut",
        "from",
        "via",
        "mode",
        "as",
    ),
    "mark": ("mark", "as", "nodes"),
    "repeat": ("repeat", "every", "steps"),
    "background": ("background", "every", "steps"),
}
QUANTS = {"all": "all", "every": "all", "first": "first", "one": "first", "any": "first"}
QUANTS["last"] = "last"
ROLE_WORDS = {
    "validator": ("validator", False),
    "validators": ("validator", True),
    "full": ("full", False),
    "fulls": ("full", True),
    "sentry": ("sentry", False),
    "sentries": ("sentry", True),
    "node": (None, False),
    "nodes": (None, True),
}
SELECTOR_KEYS = ("name", "role", "network", "impl", "pick")
PICKS = ("first", "last", "all")


# ---------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------
class _Reader(FieldReader):
    def __init__(self, source: str, topo: Topology | None = None) -> None:
        self.source = source
        self.topo: Topology | None = topo
        self.names: list[str] = []  # check rows so far
        self.reach_at: int | None = None  # index of the analyse-reach action, if any
        self.scope = 0  # rows from here on must be unique (a repeat body renames its own)

    def fail(self, fieldpath: str, problem: str, fix: str = "") -> ScenarioError:
        return ScenarioError(self.source, fieldpath, problem, fix)

    def text(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected text, got {value!r}")
        return value

    def number(self, value: Any, path: str, lo: float, hi: float | None, unit: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number ({unit}), got {value!r}")
        if value < lo or (hi is not None and value > hi):
            rng = f"{lo} <= value <= {hi}" if hi is not None else f">= {lo}"
            raise self.fail(path, f"{value} is out of range", f"use {rng} ({unit})")
        return float(value)

    def integer(self, value: Any, path: str, lo: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected a whole number, got {value!r}")
        if value < lo:
            raise self.fail(path, f"{value} is out of range", f"use a number >= {lo}")
        return value

    def choice(self, value: Any, path: str, allowed: tuple[str, ...], what: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(
                path,
                f"{value!r} is not a known {what}",
                _suggest(str(value), allowed, f"known {what}s"),
            )
        return value

    def impl_variant(self, value: Any, path: str) -> str:
        """One of IMPL_VARIANTS (`rust`, `rust:clients`, ...), or an error naming `path`."""
        return self.choice(value, path, IMPL_VARIANTS, "implementation")

    def impls(self, value: Any, path: str) -> tuple[str, ...]:
        return self.choices(value, path, IMPL_VARIANTS, "implementation", "[python, rust]")

    def engines(self, value: Any, path: str) -> tuple[str, ...]:
        return self.choices(value, path, ENGINES, "engine", "[compose, swarm]")

    def choices(
        self, value: Any, path: str, allowed: tuple[str, ...], what: str, example: str
    ) -> tuple[str, ...]:
        """A non-empty list of distinct `allowed` values (`impls:`, `engines:`)."""
        if not isinstance(value, list) or not value:
            key = path.rsplit(".", 1)[-1]
            raise self.fail(
                path,
                f"expected a list of {what}s, got {value!r}",
                f"e.g. {key}: {example}; known: {', '.join(allowed)}",
            )
        out: list[str] = []
        for i, v in enumerate(value):
            item = self.choice(v, f"{path}[{i}]", allowed, what)
            if item in out:
                raise self.fail(f"{path}[{i}]", f"{item!r} is listed twice", "list it once")
            out.append(item)
        return tuple(out)

    # --- topology and selectors -------------------------------------------------------
    @property
    def topology(self) -> Topology:
        assert self.topo is not None
        return self.topo

    def network(self, value: Any, path: str, private: bool = False) -> str:
        nets = tuple(n.name for n in self.topology.networks if not (private and not n.has_router))
        what = "NAT'd private network" if private else "network"
        return self.choice(value, path, nets, what)

    def selector(self, value: Any, path: str, one: bool, relay: bool = False) -> list[str]:
        topo = self.topology
        nodes = list(topo.nodes)
        names = [n.name for n in nodes]
        role: str | None = None
        net: str | None = None
        impl: str | None = None
        pick = "first"
        fix_form = (
            "write a node name, `[all|first|last] [python|rust] [validator|full|sentry|node]"
            "[s] [in NETWORK]` (e.g. `validator in b`, `all in b`), or a mapping "
            "{role, network, impl, pick}"
        )
        if isinstance(value, dict):
            spec = self.mapping(value, path, "a node selector")
            self.keys(spec, path, SELECTOR_KEYS)
            if "name" in spec:
                if len(spec) > 1:
                    raise self.fail(
                        path, "`name:` selects one node by itself", "drop the other keys"
                    )
                return [self.choice(spec["name"], f"{path}.name", tuple(names), "node")]
            if "role" in spec:
                role = self.choice(spec["role"], f"{path}.role", ROLES, "role")
            if "network" in spec:
                net = self.network(spec["network"], f"{path}.network")
            if "impl" in spec:
                impl = self.choice(spec["impl"], f"{path}.impl", IMPLS, "impl")
            if "pick" in spec:
                pick = self.choice(spec["pick"], f"{path}.pick", PICKS, "pick")
            text = ", ".join(f"{k}: {v}" for k, v in spec.items())
        elif isinstance(value, str) and value.strip():
            text = value.strip()
            words = text.split()
            if len(words) == 1 and words[0] in names:
                return [words[0]]
            quant = None
            if words and words[0] in QUANTS:
                quant = QUANTS[words.pop(0)]
            if words and words[0] in IMPLS:
                impl = words.pop(0)
            plural = False
            saw_role = False
            if words and words[0] in ROLE_WORDS:
                role, plural = ROLE_WORDS[words.pop(0)]
                saw_role = True
            if len(words) >= 2 and words[0] == "in":
                net = self.network(words[1], path)
                words = words[2:]
            if words:
                allowed = (*names, *QUANTS, *IMPLS, *ROLE_WORDS, "in")
                raise self.fail(
                    path,
                    f"cannot read {words[0]!r} in selector {text!r}",
                    _suggest(words[0], allowed, "selector words") + f"; {fix_form}",
                )
            if quant is None and not saw_role and impl is None:
                raise self.fail(
                    path, f"selector {text!r} names no node, role or quantifier", fix_form
                )
            pick = quant or ("all" if plural or (not saw_role and impl is not None) else "first")
        else:
            raise self.fail(path, f"expected a node selector, got {value!r}", fix_form)
        found = [
            n
            for n in nodes
            if (role is None or n.role == role)
            and (net is None or net in n.addresses)
            and (impl is None or n.impl == impl)
        ]
        if not found:
            there = "; ".join(
                f"{n.name} ({n.role} {n.impl} in {', '.join(n.addresses)})" for n in nodes
            )
            raise self.fail(
                path,
                f"selector {text!r} matches no node of topology {topo.name}",
                f"its nodes: {there}",
            )
        chosen = found if pick == "all" else [found[0] if pick == "first" else found[-1]]
        if relay:
            bad = [n.name for n in chosen if not n.is_relay_server]
            if bad:
                raise self.fail(
                    path,
                    f"selector {text!r} selects {', '.join(bad)}, not a relay server",
                    "select a node with relay_mode server or both (e.g. `sentry in a`)",
                )
        if one and len(chosen) > 1:
            raise self.fail(
                path,
                f"selector {text!r} selects {len(chosen)} nodes "
                f"({', '.join(n.name for n in chosen)}); this field takes one",
                "narrow it: `first ...`, `last ...`, or a node name",
            )
        return [n.name for n in chosen]

    def arg(self, arg: Arg, value: Any, path: str) -> Any:
        k = arg.kind
        if k in ("node", "relay"):
            return self.selector(value, path, one=True, relay=k == "relay")[0]
        if k == "nodes":
            return tuple(self.selector(value, path, one=False))
        if k == "int":
            return self.integer(value, path, 0)
        if k == "bool":
            return self.boolean(value, path)
        if k == "mark":
            return None if value is None else self.text(value, path)
        if k == "impl":
            return self.choice(value, path, IMPLS, "impl")
        if k == "transport":
            return self.choice(value, path, TRANSPORTS, "transport")
        if k == "probe_mode":
            return self.choice(value, path, actions.PROBE_MODES, "probe mode")
        if k == "network":
            return self.network(value, path)
        if k == "private_network":
            return self.network(value, path, private=True)
        if k == "network_pair":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(path, f"expected two networks, got {value!r}", "write [a, b]")
            a, b = (self.network(v, f"{path}[{i}]") for i, v in enumerate(value))
            if a == b:
                raise self.fail(path, "the same network twice", "name two different networks")
            return (a, b)
        if k == "nat":
            return self.choice(value, path, (*PRESETS, *ALIASES), "NAT preset")
        if k == "pct":
            return self.number(value, path, 0, 100, "percent; 0 removes it")
        if k == "ms":
            return self.number(value, path, 0, None, "milliseconds; 0 removes it")
        if k == "seconds":
            return self.number(value, path, 0, None, "seconds")
        if k == "count":
            return self.number(value, path, 0, None, "a count, e.g. 3")
        if k == "cores":
            return self.number(value, path, 0, 64, "CPUs per node, e.g. 0.2; 0 removes the cap")
        raise AssertionError(k)

    def args(self, spec: dict[str, Arg], given: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in given:
            if key not in spec:
                allowed = tuple(spec) or ("(none)",)
                raise self.fail(
                    f"{path}.{key}", "unknown argument", _suggest(key, allowed, "arguments")
                )
        for key, arg in spec.items():
            if key in given:
                out[key] = self.arg(arg, given[key], f"{path}.{key}")
            elif arg.default is REQUIRED:
                raise self.fail(f"{path}.{key}", "missing", f"this takes {', '.join(spec)}")
            else:
                out[key] = arg.default
        return out

    # --- steps ------------------------------------------------------------------------
    def steps(self, raw: Any, path: str, inside: str = "") -> list[Step]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(path, f"expected a list of steps, got {raw!r}", "add at least one step")
        out: list[Step] = []
        for i, item in enumerate(raw):
            out += self.step(item, f"{path}[{i}]", inside)
        return out

    def step(self, raw: Any, path: str, inside: str) -> list[Step]:
        spec = self.mapping(raw, path, "one step: check, wait, perturb, action, mark, ...")
        kinds = [k for k in spec if k in KINDS]
        if len(kinds) != 1:
            unknown = [k for k in spec if k not in KINDS]
            if not kinds and unknown:
                raise self.fail(
                    f"{path}.{unknown[0]}",
                    "not a step kind",
                    _suggest(unknown[0], KINDS, "step kinds"),
                )
            raise self.fail(
                path,
                f"a step has exactly one kind, this has {kinds or 'none'}",
                f"step kinds: {', '.join(KINDS)}",
            )
        kind = kinds[0]
        self.keys(spec, path, STEP_KEYS[kind])
        if inside.endswith("background") and kind not in ("perturb", "action", "mark"):
            raise self.fail(
                f"{path}.{kind}",
                f"a background loop runs perturbations, actions and marks, not `{kind}`",
                "move it after the background step",
            )
        return list(getattr(self, f"_{kind}")(spec, path, inside))

    def _deadline(self, spec: dict[str, Any], path: str) -> float:
        if "deadline" not in spec:
            raise self.fail(
                f"{path}.deadline", "missing", "give the seconds it may take (e.g. 120)"
            )
        return self.number(spec["deadline"], f"{path}.deadline", 1, 3600, "seconds")

    def _requires(self, spec: dict[str, Any], path: str) -> tuple[str, ...]:
        raw = spec.get("requires", [])
        if not isinstance(raw, list):
            raise self.fail(f"{path}.requires", f"expected a list of check names, got {raw!r}")
        for j, r in enumerate(raw):
            if r not in self.names:
                raise self.fail(
                    f"{path}.requires[{j}]",
                    f"{r!r} is not a check before this step",
                    _suggest(str(r), tuple(self.names) or ("(none yet)",), "earlier checks"),
                )
        return tuple(raw)

    def _build_check(self, name: Any, args: Any, path: str) -> Check:
        cname = self.choice(name, path, tuple(CHECKS), "check")
        kind = CHECKS[cname]
        given = self.mapping(
            args if args is not None else {}, f"{path.rsplit('.', 1)[0]}.args", "check arguments"
        )
        return kind.build(self.args(kind.args, given, f"{path.rsplit('.', 1)[0]}.args"))

    def _check(self, spec: dict[str, Any], path: str, inside: str) -> list[Step]:
        check = self._build_check(spec["check"], spec.get("args"), f"{path}.check")
        name = spec.get("name", spec["check"])
        name = self.text(name, f"{path}.name")
        if name in self.names[self.scope :]:
            raise self.fail(
                f"{path}.name" if "name" in spec else f"{path}.check",
                f"a check row {name!r} is already in this scenario",
                "give this one its own `name:`",
            )
        expect = self.choice(spec.get("expect", "holds"), f"{path}.expect", EXPECTS, "expectation")
        requires = self._requires(spec, path)
        for key, only in (("reason", "fails"), ("decisive", "impossible"), ("reach", "impossible")):
            if key in spec and expect != only:
                raise self.fail(
                    f"{path}.{key}", f"only for `expect: {only}`", f"drop it or set expect: {only}"
                )
        if expect == "fails" and "reason" in spec:
            check = _with_reason(check, self.text(spec["reason"], f"{path}.reason"))
        if expect == "impossible":
            if self.reach_at is None:
                raise self.fail(
                    f"{path}.expect",
                    "an expected-impossible check needs the reachability analysis first",
                    "add a step `- action: analyse-reach` (with `node:`) before it",
                )
            reach = spec.get("reach", name)
            reach = self.choice(
                reach,
                f"{path}.reach" if "reach" in spec else f"{path}.name",
                REACH_KEYS,
                "reach key",
            )
            decisive = None
            if "decisive" in spec:
                d = self.mapping(spec["decisive"], f"{path}.decisive", "a check: {check, args}")
                self.keys(d, f"{path}.decisive", ("check", "args"))
                if "check" not in d:
                    raise self.fail(f"{path}.decisive.check", "missing", "name the check")
                decisive = self._build_check(d["check"], d.get("args"), f"{path}.decisive.check")
            check = impossible(check, reach, decisive)
        always = self.boolean(spec.get("always", False), f"{path}.always")
        cause = (
            self.text(spec["likely_cause"], f"{path}.likely_cause")
            if "likely_cause" in spec
            else ""
        )
        self.names.append(name)
        return [
            CheckStep(
                name,
                check,
                self._deadline(spec, path),
                expect=expect,
                requires=requires,
                likely_cause=cause,
                always=always,
            )
        ]

    def _wait(self, spec: dict[str, Any], path: str, inside: str) -> list[Step]:
        if spec["wait"] == "duration":
            for k in ("args", "deadline", "likely_cause", "requires", "what"):
                if k in spec:
                    raise self.fail(
                        f"{path}.{k}", "not for `wait: duration`", "use `seconds:` and `because:`"
                    )
            if "seconds" not in spec or "because" not in spec:
                miss = "seconds" if "seconds" not in spec else "because"
                raise self.fail(
                    f"{path}.{miss}",
                    "missing",
                    "a plain wait needs `seconds:` and `because:` (why time itself is the "
                    "subject); to wait for something to happen, use `wait: <check>`",
                )
            secs = self.number(spec["seconds"], f"{path}.seconds", 0, 3600, "seconds")
            because = self.text(spec["because"], f"{path}.because")
            return [ActionStep(f"wait {secs:g}s: {because}", actions.sleep(secs, because))]
        for k in ("seconds", "because"):
            if k in spec:
                raise self.fail(
                    f"{path}.{k}", "only for `wait: duration`", "drop it, or use `deadline:`"
                )
        check = self._build_check(spec["wait"], spec.get("args"), f"{path}.wait")
        what = self.text(spec.get("what", f"wait for {spec['wait']}"), f"{path}.what")
        cause = (
            self.text(spec["likely_cause"], f"{path}.likely_cause")
            if "likely_cause" in spec
            else ""
        )
        return [
            WaitStep(what, check, self._deadline(spec, path), cause, self._requires(spec, path))
        ]

    def _perturb(self, spec: dict[str, Any], path: str, inside: str) -> list[Step]:
        kind = self.choice(spec["perturb"], f"{path}.perturb", tuple(PERTURB_ARGS), "perturbation")
        given = {k: v for k, v in spec.items() if k not in ("perturb", "what")}
        a = self.args(PERTURB_ARGS[kind], given, path)
        nodes = a.pop("node", None)
        if nodes is not None:
            a["nodes"] = nodes
        default = " ".join(
            [kind, *[", ".join(v) if isinstance(v, tuple) else str(v) for v in a.values()]]
        )
        what = self.text(spec.get("what", default), f"{path}.what")
        return [ActionStep(what, actions.perturbation(kind, **a))]

    def _action(self, spec: dict[str, Any], path: str, inside: str) -> list[Step]:
        name = self.choice(spec["action"], f"{path}.action", tuple(ACTIONS), "action")
        argspec, factory, label = ACTIONS[name]
        given = {k: v for k, v in spec.items() if k not in ("action", "what")}
        a = self.args(argspec, given, path)
        if name == "analyse-reach":
            self.reach_at = len(self.names)
        what = self.text(spec.get("what", label(a)), f"{path}.what")
        return [ActionStep(what, factory(a))]

    def _mark(self, spec: dict[str, Any], path: str, inside: str) -> list[Step]:
        what = self.choice(spec["mark"], f"{path}.mark", actions.MARKS, "mark")
        if "as" not in spec:
            raise self.fail(f"{path}.as", "missing", "name the mark (checks read marks[<as>])")
        key = self.text(spec["as"], f"{path}.as")
        nodes = (
            tuple(self.selector(spec["nodes"], f"{path}.nodes", one=False))
            if "nodes" in spec
            else ()
        )
        return [ActionStep(f"mark {what} as {key}", actions.mark(what, key, nodes))]

    def _repeat(self, spec: dict[str, Any], path: str, inside: str) -> list[Step]:
        times = self.integer(spec["repeat"], f"{path}.repeat", 1)
        every = (
            self.number(spec["every"], f"{path}.every", 1, 3600, "seconds")
            if "every" in spec
            else None
        )
        if "steps" not in spec:
            raise self.fail(f"{path}.steps", "missing", "list the steps to repeat")
        out: list[Step] = []
        state: dict[str, float] = {}
        before = list(self.names)
        rows: list[str] = []
        scope = self.scope
        for i in range(1, times + 1):
            self.names = list(before)  # each iteration sees the checks before the repeat
            self.scope = len(before)
            if every is not None:
                out.append(ActionStep(f"repeat {i}/{times}", actions.pace(every, state, i == 1)))
            body = self.steps(spec["steps"], f"{path}.steps", inside or "repeat")
            # a report keeps one row per check run: iteration i's rows are <name>_<i>
            renamed = {n: f"{n}_{i}" for n in self.names[len(before) :]}
            for s in body:
                if isinstance(s, CheckStep | WaitStep):
                    s.requires = tuple(renamed.get(r, r) for r in s.requires)
                if isinstance(s, CheckStep):
                    s.name = renamed[s.name]
            rows += renamed.values()
            out += body
        self.scope = scope
        clash = sorted(set(rows) & set(before))
        if clash:
            raise self.fail(
                path,
                f"repeated check row {clash[0]!r} clashes with an earlier check",
                "rename one of them",
            )
        self.names = before + rows
        return out

    def _background(self, spec: dict[str, Any], path: str, inside: str) -> list[Step]:
        if inside:
            raise self.fail(
                f"{path}.background",
                f"a background loop cannot be inside `{inside}`",
                "move it to the top level",
            )
        what = self.text(spec["background"], f"{path}.background")
        if "every" not in spec:
            raise self.fail(f"{path}.every", "missing", "seconds between the starts of two rounds")
        every = self.number(spec["every"], f"{path}.every", 1, 3600, "seconds")
        if "steps" not in spec:
            raise self.fail(f"{path}.steps", "missing", "list the perturbations to loop")
        body = self.steps(spec["steps"], f"{path}.steps", "background")
        return [BackgroundStep(what, [s for s in body if isinstance(s, ActionStep)], every)]


def _with_reason(check: Check, reason: str) -> Check:
    """An expected negative that must also say why: it holds only when its detail or cause
    names `reason` (case-insensitive)."""

    def run(obs: Observation) -> Verdict:
        v = check(obs)
        said = f"{v.detail} {v.cause or ''}".lower()
        if v.ok and reason.lower() not in said:
            return Verdict(
                False,
                f"failed, but not for the expected reason {reason!r}: {v.detail}",
                cause=v.cause,
            )
        return v

    return run


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def _topology(
    r: _Reader, raw: Any, file: Path, variant: str = DEFAULT_IMPL, impl_field: str = "--impl"
) -> tuple[str, Topology, tuple[str, ...]]:
    """(what Scenario.topology holds: a name under scenarios/ or a path, the topology, the
    nodes `variant` switched to another implementation)."""
    label, topo = _topology_as_written(r, raw, file)
    impl, scope = split_impl(variant)
    if impl == DEFAULT_IMPL:  # the file as written: unpinned nodes are python already
        return label, topo, ()
    if isinstance(raw, dict):
        data = dict(raw)
    else:
        data = yaml.load(Path(topo.source).read_text(), Loader=_StrictLoader)
    data.setdefault("name", topo.name)
    switched_raw, switched = switch_impl(data, impl, scope)
    text = yaml.safe_dump(switched_raw, sort_keys=False)
    try:
        new = parse_topology(text, f"{topo.source} (--impl {variant})", default_name=topo.name)
    except TopologyError as exc:
        raise r.fail(
            impl_field,
            f"topology {label} on {variant} is invalid: {exc}",
            "pin the node that does not fit with `impl:` in the topology",
        ) from None
    ignored = IMPL_IGNORED_CONFIG.get(impl, {})
    for node in new.nodes:
        if node.name not in switched:
            continue
        for section, body in node.config.items():
            for key in body:
                dotted = f"{section}.{key}"
                if dotted in ignored:
                    raise r.fail(
                        impl_field,
                        f"{variant} cannot run this scenario as written: topology node "
                        f"{node.name} sets `config: {{{section}: {{{key}: ...}}}}`, which the "
                        f"{impl} node accepts but ignores ({ignored[dotted]})",
                        f"pin {node.name} with `impl: {DEFAULT_IMPL}` in the topology, or drop "
                        "the key",
                    )
    inline = Path(tempfile.gettempdir()) / "sentrynet-inline"
    inline.mkdir(parents=True, exist_ok=True)
    tag = variant.replace(":", "-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    out = inline / f"{Path(label).stem}-{tag}-{digest}.yaml"
    if not out.exists():
        out.write_text(text)
    return str(out), new, tuple(switched)


def _topology_as_written(r: _Reader, raw: Any, file: Path) -> tuple[str, Topology]:
    """(what Scenario.topology holds: a name under scenarios/ or a path, the topology)."""
    if isinstance(raw, dict):
        text = yaml.safe_dump(raw, sort_keys=False)
        try:
            topo = parse_topology(
                text, f"{r.source}: topology", default_name=file.stem.split(".")[0]
            )
        except TopologyError as exc:
            raise ScenarioError(
                r.source, f"topology.{exc.field}" if exc.field else "topology", exc.problem, exc.fix
            ) from None
        inline = Path(tempfile.gettempdir()) / "sentrynet-inline"
        inline.mkdir(parents=True, exist_ok=True)
        out = inline / f"{file.stem}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.yaml"
        if not out.exists():
            out.write_text(text)
        return str(out), topo
    ref = r.text(raw, "topology")
    if ref.endswith((".yaml", ".yml")):
        path = (file.parent / ref).resolve()
        label = str(path)
    else:
        path = SCENARIO_DIR / f"{ref}.yaml"
        label = ref
    if not path.is_file():
        known = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
        raise r.fail(
            "topology",
            f"no topology file {path}",
            _suggest(ref, tuple(known), "topologies in scenarios/")
            + ", a path ending .yaml, or an inline mapping",
        )
    try:
        return label, load_topology(path)
    except TopologyError as exc:
        raise r.fail(
            "topology", f"topology {ref} is invalid: {exc}", "fix that file first"
        ) from None


def parse_scenario(
    text: str,
    file: Path,
    source: str | None = None,
    impl: str = DEFAULT_IMPL,
    impl_field: str = "--impl",
    follow_tested_by: bool = True,
) -> Scenario:
    """The scenario of a file's text, its topology's unpinned nodes on `impl` (one of
    IMPL_VARIANTS; `impl_field` names where the value came from in errors). Without
    `follow_tested_by` a `tested_by:` is read but its target not loaded (loading that
    target, which must not name one itself)."""
    source = source or _display(file)
    r = _Reader(source)
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ScenarioError(source, "", f"not valid YAML: {exc}", "fix the syntax") from None
    top = r.mapping(raw, "", "a scenario: name, description, topology, steps")
    r.keys(top, "", TOP_KEYS)
    stem = file.name.removesuffix(SUFFIX).removesuffix(".scenario")
    name = r.text(top.get("name", stem), "name")
    if name in RESERVED_NAMES:
        raise r.fail("name", f"{name!r} is a `sentrynet scenario` subcommand", "rename the file")
    if name != stem:
        raise r.fail(
            "name",
            f"{name!r} is not the file's name ({stem})",
            f"rename the file to {name}{SUFFIX} or drop `name:`",
        )
    for k in ("description", "topology", "steps"):
        if k not in top:
            raise r.fail(
                k,
                "missing",
                {
                    "description": "one line: what the run shows",
                    "topology": "name a topology under scenarios/ (e.g. sentry) or write it inline",
                    "steps": "list the steps",
                }[k],
            )
    description = " ".join(r.text(top["description"], "description").split())
    variant = r.impl_variant(impl, impl_field)
    impls = r.impls(top["impls"], "impls") if "impls" in top else (DEFAULT_IMPL,)
    engines = r.engines(top["engines"], "engines") if "engines" in top else (DEFAULT_ENGINE,)
    topology, r.topo, switched = _topology(r, top["topology"], file, variant, impl_field)
    conclusion = None
    if "conclusion" in top:
        cname = r.choice(top["conclusion"], "conclusion", tuple(actions.CONCLUSIONS), "conclusion")
        conclusion = actions.CONCLUSIONS[cname]
    steps = r.steps(top["steps"], "steps")
    if not any(isinstance(s, CheckStep) for s in steps):
        raise r.fail("steps", "no `check:` step", "a scenario reports checks; add at least one")
    check_names = [s.name for s in steps if isinstance(s, CheckStep)]
    tested_by = (
        _tested_by(r, top.get("tested_by"), name, topology, variant, check_names)
        if follow_tested_by
        else (r.text(top["tested_by"], "tested_by") if "tested_by" in top else None)
    )
    return Scenario(
        name,
        topology,
        description,
        steps,
        conclusion=conclusion,
        source=str(file),
        impl=variant,
        impls=impls,
        engines=engines,
        switched=switched,
        node_impls={n.name: n.impl for n in r.topology.nodes},
        tested_by=tested_by,
    )


def _tested_by(
    r: _Reader, raw: Any, name: str, topology: str, impl: str, checks: list[str]
) -> str | None:
    """`tested_by: OTHER`: `make test` judges this file's checks in OTHER's run (another
    library scenario on the same topology whose steps hold every check named here), so
    the two do not each bring up a testnet. `sentrynet scenario NAME` still runs this one."""
    if raw is None:
        return None
    other = r.text(raw, "tested_by")
    known = {f.name.removesuffix(SUFFIX): f for f in scenario_files()}
    if other == name or other not in known:
        raise r.fail(
            "tested_by",
            f"{other!r} is not another library scenario",
            _suggest(other, tuple(k for k in known if k != name), "known"),
        )
    host = load_scenario(known[other], impl=impl, follow_tested_by=False)
    if host.tested_by is not None:
        raise r.fail(
            "tested_by",
            f"{other} is itself `tested_by: {host.tested_by}`",
            f"name the scenario that runs the checks ({host.tested_by})",
        )
    if host.topology != topology:
        raise r.fail(
            "tested_by",
            f"{other} runs another topology ({host.topology})",
            "name a scenario on the same topology, or drop `tested_by:`",
        )
    missing = [c for c in checks if c not in host.check_names]
    if missing:
        raise r.fail(
            "tested_by",
            f"{other} has no check named {', '.join(missing)}",
            f"add those checks to scenarios/library/{other}{SUFFIX} or drop `tested_by:`",
        )
    return other


def _display(file: Path) -> str:
    try:
        return str(file.resolve().relative_to(SCENARIO_DIR.parent))
    except ValueError:
        return str(file)


def load_scenario(
    path: str | Path,
    impl: str = DEFAULT_IMPL,
    impl_field: str = "--impl",
    follow_tested_by: bool = True,
) -> Scenario:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ScenarioError(
            str(file), "", f"cannot read: {exc.strerror}", "check the path"
        ) from None
    return parse_scenario(
        text, file, impl=impl, impl_field=impl_field, follow_tested_by=follow_tested_by
    )


def scenario_files(directory: Path = LIBRARY_DIR) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def find(name_or_file: str) -> Path:
    """A scenario file by name (scenarios/library/<name>.yaml) or by path."""
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise SentrynetError(f"no scenario file {p}")
        return p
    candidate = LIBRARY_DIR / f"{name_or_file}{SUFFIX}"
    if not candidate.is_file():
        known = [f.name.removesuffix(SUFFIX) for f in scenario_files()]
        raise SentrynetError(
            f"no scenario {name_or_file!r}; "
            + _suggest(name_or_file, tuple(known), "known")
            + " (or give a scenario file's path)"
        )
    return candidate
