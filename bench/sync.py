"""Direct vs relayed sync throughput, same run, same chain, same serving peers.

Testnet (bench/topogen.sync): four validators and `sync-direct` on network a (cone NAT);
`sync-relay` alone on network b behind a symmetric router with DCUtR off, so it reaches
the validators only over circuits through the public relay. Steps:

1. up; stop the validators, the relay and both syncers;
2. write one pre-built chain of N certified blocks (signed offline with the validators'
   deterministic keys, harness/model/keys.py) into every validator's store and the relay's (it
   follows the chain but serves no sync), empty both syncers' stores (the same docker-cp
   approach as harness/scenarios/actions.wipe_store);
3. start the validators and the relay (consensus continues from height N), wait until two
   validators hold a reservation; start `sync-direct`, wait for its sync to reach N; then
   `sync-relay` (one after the other: the two never compete for the validators' CPU).

blocks/s = blocks applied / time spent in sync sessions, summed over the node's
`sync_completed` events (node clock); end_to_end_blocks_per_s also counts the gaps between
sessions (first session start -> last session end). The connection kind each block came over is the
node's own record (`/status chain.sync_peers[].kind`), checked: a relayed figure with any
direct block in it is reported as contaminated, not as relayed.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from libp2p.crypto.serialization import deserialize_private_key

from bench import live, reservation, stats, topogen
from bench.context import Ctx
from harness.checks import Observation
from harness.errors import SentrynetError
from harness.model.keys import node_key
from harness.model.testnet import Testnet
from harness.run.testnet import RunningTestnet
from node.chain import codec
from node.chain.block import PRECOMMIT, Block, CommitCert, ValidatorSet, Vote
from node.chain.service import block_payload
from node.chain.store import BlockStore
from node.contract import Event, Status

STORE_FILES = ("chain.sqlite", "chain.sqlite-wal", "chain.sqlite-shm")
RUST_STORE = "chain.jsonl"  # the rust node's block store (peers/rust/src/chain/store.rs)
BLOCKS = 3000
QUICK_BLOCKS = 400


def jsonl_store(chain_id: bytes, entries: Iterable[tuple[Block, CommitCert]]) -> bytes:
    """The rust node's store file (peers/rust/src/chain/store.rs, `chain.jsonl`): a
    `{"chain_id"}` line, then one `{"block", "commit"}` line per height in order, each in
    canonical JSON as the sync protocol carries them."""
    lines = [codec.encode({"chain_id": chain_id.hex()})]
    for block, cert in entries:
        lines.append(codec.encode({"block": block.to_obj(), "commit": cert.to_obj()}))
    return b"".join(line + b"\n" for line in lines)


def build_chain(testnet: Testnet, blocks: int, out: Path) -> Path:
    """A store with `blocks` certified blocks for this testnet's validator set (our node's
    sqlite), and the same chain as the rust node's `chain.jsonl` beside it (jsonl_store)."""
    names = list(testnet.validators)
    ids = testnet.validator_ids
    vset = ValidatorSet([(n, ids[n]) for n in names])
    keys = {ids[n]: deserialize_private_key(node_key(testnet.name, n).private_key) for n in names}
    path = out / "chain.sqlite"
    for f in STORE_FILES:
        (out / f).unlink(missing_ok=True)
    store = BlockStore(path, vset.chain_id)
    now_ms = int(time.time() * 1000) - blocks * 1000
    signers = vset.ids[: vset.quorum]
    entries: list[tuple[Block, CommitCert]] = []
    try:
        for h in range(1, blocks + 1):
            proposer = vset.proposer(h, 0)
            block = Block(
                h,
                store.tip_hash,
                proposer,
                now_ms + h * 1000,
                block_payload(vset.name_of[proposer], h),
            )
            votes = tuple(
                Vote.make(vset, keys[pid], pid, PRECOMMIT, h, 0, block.hash) for pid in signers
            )
            cert = CommitCert(h, 0, block.hash, votes)
            store.append(block, cert)
            entries.append((block, cert))
    finally:
        store.close()
    (out / RUST_STORE).write_bytes(jsonl_store(vset.chain_id, entries))
    return path


def _put_store(container: Any, sqlite: bytes | None) -> None:
    """Replace a stopped node's store: `sqlite` bytes, or empty (0-byte files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for fname in STORE_FILES:
            data = sqlite if (fname == "chain.sqlite" and sqlite is not None) else b""
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    if not container.put_archive("/data", buf.getvalue()):
        raise SentrynetError(f"docker cp into {container.name}:/data failed")


def _put_rust_store(container: Any, jsonl: bytes) -> None:
    """Replace a stopped rust node's block store with `jsonl` (a chain.jsonl)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(RUST_STORE)
        info.size = len(jsonl)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(jsonl))
    if not container.put_archive("/data", buf.getvalue()):
        raise SentrynetError(f"docker cp into {container.name}:/data failed")


def _sync_done(net: RunningTestnet, node: str, height: int) -> tuple[bool, str]:
    obs = live.collect(net, [node])
    done = [e for e in obs.events_of(node, "sync_completed") if (e.to_height or 0) >= height]
    chain = obs.status_of(node).chain
    h = chain.height if chain else None
    peers = [(p.kind, p.blocks) for p in chain.sync_peers] if chain else []
    return bool(done), f"{node} at height {h}, sync peers {peers}"


def _figure(obs: Observation, node: str) -> dict[str, Any]:
    sessions = obs.events_of(node, "sync_completed")
    chain = obs.status_of(node).chain
    kinds: dict[str, int] = {}
    for p in chain.sync_peers if chain else ():
        kinds[str(p.kind)] = kinds.get(str(p.kind), 0) + int(p.blocks or 0)
    out: dict[str, Any] = {
        "blocks_by_kind": kinds,
        "sessions": [e.to_json() for e in sessions],  # as the node served them
    }
    if sessions:
        # every session until the target, not only the first: under load a session can
        # end early (its 60 s cap, a peer timing out) and the next one continues
        blocks = sum(_session_blocks(x) for x in sessions)
        dur = sum(float(x.duration_s or 0) for x in sessions)
        first_start = live.at(sessions[0]) - float(sessions[0].duration_s or 0)
        span = live.at(sessions[-1]) - first_start
        out.update(blocks=blocks, duration_s=round(dur, 3), session_count=len(sessions))
        out["peers"] = max(len(x.peers or ()) for x in sessions)
        out["blocks_per_s"] = round(blocks / dur, 2) if dur > 0 else None
        out["end_to_end_blocks_per_s"] = round(blocks / span, 2) if span > 0 else None
    return out


def _session_blocks(e: Event) -> int:
    """Blocks one sync_completed session applied (the contract always carries both ends)."""
    if e.from_height is None or e.to_height is None:
        raise SentrynetError(f"sync_completed #{e.seq} without from_height/to_height")
    return e.to_height - e.from_height + 1


def _sync_log(container: Any, keep: int = 12) -> list[str]:
    """The node's own words on its sync (timeouts, refused streams): where time went."""
    try:
        text = container.logs(tail=400).decode(errors="replace")
    except Exception as exc:
        return [f"(no log: {exc})"]
    lines = [ln for ln in text.splitlines() if "node.chain" in ln or "sync_completed" in ln]
    return [ln[:300] for ln in lines[-keep:]]


def run_once(ctx: Ctx, blocks: int, run: int, relay_impl: str = "python") -> dict[str, Any]:
    """One syncbench testnet (module doc) whose relay runs `relay_impl` (the rest ours)."""
    out: dict[str, Any] = {"run": run, "chain_blocks": blocks, "relay_impl": relay_impl}
    label = "sync" if relay_impl == "python" else f"sync-{relay_impl}"
    with live.running(ctx, topogen.sync(relay_impl), label) as net:
        out["testnet"] = net.name
        tn = net.testnet
        validators = list(tn.validators)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            sqlite_path = build_chain(tn, blocks, Path(tmp))
            sqlite = sqlite_path.read_bytes()
            jsonl = (sqlite_path.parent / RUST_STORE).read_bytes()
            out["chain_build_s"] = round(time.monotonic() - t0, 2)
        out["chain_bytes"] = len(sqlite)
        # the relay follows the chain too (it serves no sync): it gets the injected chain
        # as well, or it would sit on the first blocks of the chain the validators had
        # started before the injection
        holders = [*validators, "relay"]
        for n in [*holders, "sync-direct", "sync-relay"]:
            net.container(n).stop(timeout=10)
        for n in holders:
            if tn.node(n).impl == "rust":
                _put_rust_store(net.container(n), jsonl)
            else:
                _put_store(net.container(n), sqlite)
        for n in ("sync-direct", "sync-relay"):
            _put_store(net.container(n), None)
        for n in holders:
            net.container(n).start()

        def validators_ready() -> tuple[bool, str]:
            hs = {}
            for n in validators:
                st = live.status(net, n) or Status()
                hs[n] = (st.height, len(st.reservations))
            at_height = all((h or 0) >= blocks for h, _ in hs.values())
            reserved = sum(1 for _, r in hs.values() if r >= 1)
            # the relayed syncer reaches a validator only through its reservation
            return at_height and reserved >= 2, f"validators (height, reservations): {hs}"

        try:
            live.wait(
                ctx,
                net,
                validators_ready,
                "validators back at the injected height, two with a reservation",
                180.0,
                "the injected store was rejected (chain id) or the relay is unreachable",
            )
        except SentrynetError as exc:  # measure anyway: the relayed figure may be missing
            out.setdefault("errors", []).append(str(exc))
        out["validators_with_reservation"] = sorted(
            n for n in validators if (live.status(net, n) or Status()).reservations
        )
        for n in ("sync-direct", "sync-relay"):
            net.container(n).start()
            t_start = time.monotonic()

            def synced(n: str = n) -> tuple[bool, str]:
                return _sync_done(net, n, blocks)

            try:
                live.wait(
                    ctx,
                    net,
                    synced,
                    f"{n} to sync to {blocks}",
                    240.0,
                    "no sync peer reached (peer exchange, circuits) or sync stalled",
                )
            except SentrynetError as exc:
                out.setdefault("errors", []).append(str(exc))
            out[f"{n}_wall_s"] = round(time.monotonic() - t_start, 2)
            # stop it again so the next syncer has the validators to itself
            obs = live.collect(net, [n])
            out[n] = _figure(obs, n)
            if "blocks_per_s" not in out[n]:
                # not one block in the whole wait: a measured zero, not a missing figure
                out[n].update(blocks=0, blocks_per_s=0.0, stalled_s=out[f"{n}_wall_s"])
            out[n]["log"] = _sync_log(net.container(n))
            out[n]["first_reservation"] = reservation.samples(obs)
            net.container(n).stop(timeout=10)
        out["clock"] = "node monotonic (sync_completed.duration_s)"
    direct, relayed = out.get("sync-direct") or {}, out.get("sync-relay") or {}
    # clean: no block came over the other kind of connection (none at all is clean too)
    out["relay_path_clean"] = set(relayed.get("blocks_by_kind") or {}) <= {"relayed"}
    out["direct_path_clean"] = set(direct.get("blocks_by_kind") or {}) <= {"direct"}
    return out


def blocks(ctx: Ctx) -> int:
    """The chain length to sync: --sync-blocks, else BLOCKS (QUICK_BLOCKS with --quick)."""
    return int(ctx.options.get("sync_blocks") or (QUICK_BLOCKS if ctx.quick else BLOCKS))


def run_reported(ctx: Ctx, n_blocks: int, run: int, relay_impl: str = "python") -> dict[str, Any]:
    """run_once, its failure kept as the run's `error`, and a progress line."""
    try:
        r = run_once(ctx, n_blocks, run, relay_impl)
    except SentrynetError as exc:
        r = {"run": run, "relay_impl": relay_impl, "error": str(exc)}
    ctx.say(
        f"sync run {run + 1}/{ctx.repeat} ({relay_impl} relay): direct "
        f"{(r.get('sync-direct') or {}).get('blocks_per_s')} blocks/s, relayed "
        f"{(r.get('sync-relay') or {}).get('blocks_per_s')} blocks/s, errors "
        f"{r.get('errors') or r.get('error') or '-'}"
    )
    return r


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Direct and relayed blocks/s over the runs whose blocks came over the path named."""
    d = [r["sync-direct"].get("blocks_per_s") for r in runs if r.get("direct_path_clean")]
    rl = [r["sync-relay"].get("blocks_per_s") for r in runs if r.get("relay_path_clean")]
    ds, rs = stats.summary(d, 2), stats.summary(rl, 2)
    return {
        "clock": "node monotonic: blocks / time in sync sessions (sync_completed)",
        "sync_direct_blocks_per_s": ds,
        "sync_relayed_blocks_per_s": rs,
        "relayed_over_direct": stats.ratio(rs["median"], ds["median"]),
    }


def measure(ctx: Ctx, relay_impl: str = "python") -> dict[str, Any]:
    n_blocks = blocks(ctx)
    runs = [run_reported(ctx, n_blocks, i, relay_impl) for i in range(ctx.repeat)]
    return {**summarize(runs), "runs": runs}
