"""Where an idle node's CPU goes: `python -m bench.idle_profile [--nodes 4] [--window 60]`.

`--cpu-only` runs no profiler: every node's CPU (utime + stime from /proc) over the window,
per node and the median, for before/after comparisons of the node's own cost (cProfile
roughly doubles it). `--followers K` adds K full nodes that find each other by peer
exchange, so that each node holds many connections: the per-connection cost.
`--interval S` sets the block interval (default 1 s, as in the testnets); two intervals
separate the per-block cost from the fixed one. `--cpu-only --sample` also records one
node (the first follower, else v0) with the py-spy sampler over the window: where its CPU
goes without cProfile's per-call cost in the figures (bench/stacks.py).

`--cpu-only --ab REV` compares two versions of the node in one run: every second validator
and every second follower (v1, v3, f1, f3, ...) runs git revision REV's node/ (exported
into the work directory), the others the working tree's, all in one network. Runs taken one
after another on these shared machines drifted by up to a fifth for the same code; nodes
measured side by side over the same window share whatever the machine does meanwhile, so
the ratio of the two medians per role says what a change saved. `--ab-swap` gives REV the
other half, to check that the halves themselves do not differ.

Why: the scale figures show 32+ nodes saturating 2 cores before any reservation work, so
the cost of a node doing nothing but keeping its network alive decides how far a laptop
testnet scales. This starts N validators on loopback (block interval 1 s, as in the
testnets), lets them settle, then runs one of them under cProfile for `--window` seconds
and reports its CPU time (utime + stime from /proc/<pid>/stat) and where it went: own time grouped
by top-level module (libp2p subsystem, trio, the node's services), plus the top functions.

Real node processes, real sockets; nothing here is a test and nothing asserts a number.
Writes bench/results/idle-profile-<run-id>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.stacks import path_group, shares
from node.config import P2PSection
from testkit.chain import chain_section, height, validator_configs
from testkit.procs import REPO, NodeProc, NodeProcs, WaitTimeout, wait_for

RESULTS = REPO / "bench" / "results"


def _with_followers(
    procs: NodeProcs, nodes: int, followers: int, interval: float
) -> tuple[list[NodeProc], list[NodeProc]]:
    """Write `nodes` validators and `followers` full nodes (persistent peers: the
    validators; peer exchange finds the rest), launch them all; (validators, followers)."""
    validators, ids = validator_configs(procs, [f"v{i}" for i in range(nodes)], interval)
    vaddrs = [f"{v.p2p_addr}/p2p/{ids[v.name]}" for v in validators]
    full = [
        procs.write_config(
            f"f{i}",
            node={"role": "full"},
            p2p={"persistent_peers": vaddrs, "discovery": True},
            chain=chain_section(ids, interval),
        )
        for i in range(followers)
    ]
    return validators, full


def _peer_set_settled(node: NodeProc, want: int, timeout: float) -> int:
    """Wait (bounded) until `node` holds `want` connections; the count it reached."""
    with contextlib.suppress(WaitTimeout):
        wait_for(node, lambda s: len(s["connections"]) >= want, f"{want} connections", timeout)
    return len(node.status()["connections"])


def _py_spy() -> str:
    """The py-spy executable (the bench extra installs it into the venv)."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: `make venv` installs it (the bench extra)")
    return found


def _start_sampler(pid: int, window: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy records `pid` for `window` seconds from outside the process, 100 samples a
    second, never stopping it (--nonblocking), collapsed stacks into `out`."""
    argv = [_py_spy(), "record", "--nonblocking", "--rate", "100", "--format", "raw"]
    argv += ["--full-filenames"]
    argv += ["--duration", str(max(1, int(window))), "--pid", str(pid), "--output", str(out)]
    with open(out.with_suffix(".log"), "wb") as log:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)


def _sampled(sampler: subprocess.Popen[bytes], out: Path, who: str) -> dict[str, Any]:
    """The sampler's shares once it has written its file."""
    if sampler.wait(60) != 0 or not out.exists():
        log = out.with_suffix(".log")
        raise RuntimeError(f"py-spy failed (exit {sampler.returncode}): see {log}")
    got = shares(out)
    return {
        "node": who,
        "samples": got.samples,
        "idle_samples": got.idle,
        "note": "py-spy samples, 100/s, less those waiting in epoll (idle_samples); shares of "
        "the rest: self time by group and by function, inclusive time by function",
        "by_group": got.by_group,
        "top_self": [{"share": v, "function": k} for k, v in got.top_self],
        "top_inclusive": [{"share": v, "function": k} for k, v in got.top_inclusive],
    }


@dataclass(frozen=True)
class AB:
    """`--ab REV`: `rev`'s node/ exported into `code_dir`; `swap` gives it the even
    positions instead of the odd ones."""

    rev: str
    code_dir: Path
    swap: bool = False
    every: bool = False  # `--against REV`: every node runs REV's node/

    def runs_rev(self, position: int) -> bool:
        return self.every or (position % 2 == 1) != self.swap


def export_node_tree(rev: str, work: Path) -> AB:
    """git revision `rev`'s node/ package into `work`/ab-<commit> (git archive: no
    worktree left registered); a revision git does not know is a clear error."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--verify", "--short", f"{rev}^{{commit}}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--ab {rev}: not a git revision here ({exc.stderr.strip()})") from None
    dest = work / f"ab-{commit}"
    dest.mkdir(parents=True, exist_ok=True)
    argv = ["git", "archive", "--format=tar", commit, "node"]
    archive = subprocess.run(argv, cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return AB(f"{rev} ({commit})", dest)


def _ab_figures(ab: AB, cores: dict[str, float], roles: dict[str, list[str]]) -> dict[str, Any]:
    """Per role: the median of each half and the working tree's as a ratio of REV's."""
    out: dict[str, Any] = {"rev": ab.rev, "rev_runs": [], "working_tree_runs": []}
    for role, names in roles.items():
        if not names:
            continue
        rev = [n for i, n in enumerate(names) if ab.runs_rev(i)]
        ours = [n for i, n in enumerate(names) if not ab.runs_rev(i)]
        out["rev_runs"] += rev
        out["working_tree_runs"] += ours
        if not rev or not ours:
            continue
        m_rev = statistics.median(cores[n] for n in rev)
        m_ours = statistics.median(cores[n] for n in ours)
        out[role] = {
            "rev_median": m_rev,
            "working_tree_median": m_ours,
            "working_tree_over_rev": round(m_ours / m_rev, 3) if m_rev else None,
        }
    return out


def cpu_only(
    nodes: int,
    window: float,
    interval: float,
    work: Path,
    followers: int = 0,
    sample: bool = False,
    ab: AB | None = None,
) -> dict[str, Any]:
    """Every node's CPU over `window` once the chain runs (and, with followers, once the
    peer set settled); no profiler in the way (with `sample`, py-spy from outside). With
    `ab`, half of each role runs another revision's node/ (AB.runs_rev)."""
    with NodeProcs(work) as procs:
        validators, full = _with_followers(procs, nodes, followers, interval)
        started = validators + full
        for group in (validators, full):
            for i, node in enumerate(group):
                code = ab.code_dir if ab is not None and ab.runs_rev(i) else None
                procs.launch(node, wait_ready=False, code_dir=code)
        first = started[0]
        wait_for(first, lambda s: height(s) >= 5, "chain running", 60)
        if full:
            want = min(len(started) - 1, P2PSection(()).max_connections)
            _peer_set_settled(full[-1], want, 120)
        pids = {n.name: n.proc.pid for n in started if n.proc is not None}
        t0, h0 = time.monotonic(), height(first.status())
        mesh0 = {n.name: _mesh_peers(n.status()) for n in started}
        cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        sampled_node = full[0] if full else first
        sample_out = work / f"{sampled_node.name}.stacks"
        sampler = _start_sampler(pids[sampled_node.name], window, sample_out) if sample else None
        # the window is a length of time to measure over, not a condition; polling /status
        # through it (as this did) made the first node answer ~10 requests a second
        time.sleep(window)
        elapsed = time.monotonic() - t0
        cores = {
            name: round((_cpu_seconds(pid) - cpu0[name]) / elapsed, 4) for name, pid in pids.items()
        }
        h1 = height(first.status())
        statuses = {n.name: n.status() for n in started}
        conns = {name: len(st["connections"]) for name, st in statuses.items()}
        mesh1 = {name: _mesh_peers(st) for name, st in statuses.items()}
        sampled = _sampled(sampler, sample_out, sampled_node.name) if sampler else None
    out: dict[str, Any] = {
        "mode": "cpu-only",
        "nodes": nodes,
        "followers": followers,
        "block_interval_s": interval,
        "window_s": round(elapsed, 1),
        "blocks_in_window": h1 - h0,
        "connections": conns[first.name],
        "connections_per_node": conns,
        "cpu_cores_per_node": cores,
        "cpu_cores_median": statistics.median(cores.values()),
        # a CPU figure is only comparable with the mesh it was taken with: a smaller
        # (or collapsed) gossip mesh receives each message fewer times
        "mesh_peers_at_start": mesh0,
        "mesh_peers_at_end": mesh1,
        "load_average": list(os.getloadavg()),
    }
    if full:
        out["cpu_cores_median_validators"] = statistics.median(cores[v.name] for v in validators)
        out["cpu_cores_median_followers"] = statistics.median(cores[f.name] for f in full)
    if ab is not None and ab.every:
        out["code"] = ab.rev
    elif ab is not None:
        roles = {"validators": [v.name for v in validators], "followers": [f.name for f in full]}
        out["ab"] = _ab_figures(ab, cores, roles)
    if sampled:
        out["sampled"] = sampled
    return out


def against(
    rev_name: str,
    pairs: int,
    nodes: int,
    followers: int,
    window: float,
    interval: float,
    work: Path,
    say: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> dict[str, Any]:
    """`--against REV`: `pairs` pairs of runs, REV's node/ on every node, then the working
    tree's, alternating so that a drift of the machine falls on both. For what `--ab` cannot
    split: a change of the whole network's behaviour (gossip mesh, peer exchange), or a
    revision too far apart to share a network with today's node."""
    rev = replace(export_node_tree(rev_name, work), every=True)
    runs: dict[str, list[float]] = {"rev": [], "working_tree": []}
    for i in range(pairs):
        for side, code in (("rev", rev), ("working_tree", None)):
            got = cpu_only(nodes, window, interval, work / f"{side}-{i}", followers, ab=code)
            runs[side].append(got["cpu_cores_median"])
            say(f"pair {i + 1}/{pairs} {side}: {got['cpu_cores_median']:.4f} cores per node")
    m_rev = statistics.median(runs["rev"])
    m_tree = statistics.median(runs["working_tree"])
    return {
        "mode": "against",
        "rev": rev.rev,
        "nodes": nodes,
        "followers": followers,
        "window_s": window,
        "runs_cpu_cores_median": runs,
        "rev_median": m_rev,
        "working_tree_median": m_tree,
        "working_tree_over_rev": round(m_tree / m_rev, 3) if m_rev else None,
    }


def profile(nodes: int, window: float, work: Path, followers: int = 0) -> dict[str, Any]:
    """One node under cProfile: validator v0, or with followers the first full node."""
    with NodeProcs(work) as procs:
        validators, full = _with_followers(procs, nodes, followers, 1.0)
        started = validators + full
        profiled = full[0] if full else validators[0]
        prof_out = work / f"{profiled.name}.prof"
        for node in started:
            if node is not profiled:
                procs.launch(node, wait_ready=False)
        # CPU time, not wall time: an idle node spends its wall time in epoll
        wrapper = (
            "import cProfile, runpy, sys, time\n"
            "p = cProfile.Profile(time.process_time)\n"
            "sys.argv = ['node', '--config', sys.argv[2]]\n"
            "p.enable()\n"
            "try:\n"
            "    runpy.run_module('node', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "finally:\n"
            "    p.disable()\n"
            "    p.dump_stats(OUT)\n"
        )
        wrapper = wrapper.replace("OUT", repr(str(prof_out)))
        profiled.proc = subprocess.Popen(
            [sys.executable, "-c", wrapper, "--config", str(profiled.config_path)],
            stdout=open(profiled.log_path, "ab"),  # noqa: SIM115 (owned by the process)
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
        )
        wait_for(profiled, lambda s: height(s) >= 5, "chain running", 60)
        if full:
            _peer_set_settled(profiled, min(len(started) - 1, P2PSection(()).max_connections), 120)
        t0, h0 = time.monotonic(), height(profiled.status())
        cpu0 = _cpu_seconds(profiled.proc.pid)
        time.sleep(window)  # a length of time to profile, not a condition (see cpu_only)
        if profiled.proc.poll() is not None:
            raise RuntimeError(f"{profiled.name} exited during the window: see its log")
        cpu1 = _cpu_seconds(profiled.proc.pid)
        elapsed, h1 = time.monotonic() - t0, height(profiled.status())
        conns = len(profiled.status()["connections"])
        profiled.proc.send_signal(signal.SIGINT)  # clean exit: cProfile writes its file
        profiled.proc.wait(30)
    stats = pstats.Stats(str(prof_out))
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    funcs: list[tuple[float, str]] = []
    # inclusive time of libp2p's and the node's own functions: which subsystem's work it
    # is (trio scheduling and builtins are charged to whoever awaited them)
    inclusive: list[tuple[float, str]] = []
    for (fname, line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        g = path_group(fname)
        groups[g] = groups.get(g, 0.0) + tt
        funcs.append((tt, f"{g}:{func}:{line}"))
        if g.startswith(("libp2p", "node")):
            inclusive.append((ct, f"{g}:{func}:{line}"))
    funcs.sort(reverse=True)
    inclusive.sort(reverse=True)
    return {
        "nodes": nodes,
        "window_s": round(elapsed, 1),
        "blocks_in_window": h1 - h0,
        "connections": conns,
        "cpu_cores_in_window": round((cpu1 - cpu0) / elapsed, 4),
        "load_average": list(os.getloadavg()),
        "note": "profile shares: CPU time over the whole process life (start-up included)",
        "profile_total_s": round(total, 2),
        "by_group": {
            g: round(t / total, 4) for g, t in sorted(groups.items(), key=lambda kv: -kv[1])[:15]
        },
        "top_functions": [{"share": round(t / total, 4), "function": f} for t, f in funcs[:15]],
        "top_inclusive": [{"share": round(t / total, 4), "function": f} for t, f in inclusive[:25]],
    }


def _mesh_peers(status: dict[str, Any]) -> int | None:
    """The node's consensus gossip mesh size (/status chain.mesh_peers), if it says."""
    chain = status.get("chain") or {}
    peers = chain.get("mesh_peers")
    return len(peers) if isinstance(peers, list) else None


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle_profile", description=__doc__)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--cpu-only", action="store_true", help="no profiler: every node's CPU")
    p.add_argument("--interval", type=float, default=1.0, help="block interval (--cpu-only)")
    p.add_argument("--sample", action="store_true", help="with --cpu-only: py-spy samples one node")
    p.add_argument(
        "--followers",
        type=int,
        default=0,
        help="full nodes beside the validators: the per-connection cost (profiled: f0)",
    )
    p.add_argument(
        "--ab",
        metavar="REV",
        help="with --cpu-only: every second node of each role runs git revision REV's node/",
    )
    p.add_argument("--ab-swap", action="store_true", help="with --ab: REV gets the other half")
    p.add_argument(
        "--against",
        metavar="REV",
        help="with --cpu-only: runs of every node on REV's node/ alternating with runs of the "
        "working tree's (--pairs of them); for changes whose effect is network-wide",
    )
    p.add_argument("--pairs", type=int, default=3, help="with --against: alternating pairs")
    args = p.parse_args(argv)
    if args.sample and not args.cpu_only:
        p.error("--sample needs --cpu-only (the profiled run has cProfile in the process)")
    if args.ab and not args.cpu_only:
        p.error("--ab needs --cpu-only (it compares CPU figures, not profiles)")
    if args.ab_swap and not args.ab:
        p.error("--ab-swap needs --ab REV")
    if args.ab and args.nodes < 2:
        p.error("--ab needs --nodes 2 or more (a validator of each version)")
    if args.against and (args.ab or not args.cpu_only or args.sample):
        p.error("--against needs --cpu-only, without --ab or --sample")
    if args.pairs < 1:
        p.error("--pairs must be 1 or more")
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    work = REPO / ".cache" / "bench" / f"idle-{run_id}"
    work.mkdir(parents=True, exist_ok=True)
    if args.against:
        measured = against(
            args.against, args.pairs, args.nodes, args.followers, args.window, args.interval, work
        )
        doc = {"run_id": run_id, **measured}
    elif args.cpu_only:
        ab = None
        if args.ab:
            ab = replace(export_node_tree(args.ab, work), swap=args.ab_swap)
        measured = cpu_only(
            args.nodes, args.window, args.interval, work, args.followers, args.sample, ab
        )
        doc = {"run_id": run_id, **measured}
    else:
        doc = {"run_id": run_id, **profile(args.nodes, args.window, work, args.followers)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"idle-profile-{run_id}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
