"""bench/stacks.py: py-spy's collapsed stacks into self and inclusive shares."""

from __future__ import annotations

from pathlib import Path

from bench.stacks import frame_group, path_group, shares

SP = "/w/.venv/lib/python3.11/site-packages"
RUN = "run (/w/node/app.py:40)"
READ = "read (/w/node/overrides/yamux_env.py:12)"
PARSE = f"ParseFromString ({SP}/google/protobuf/message.py:199)"
PUSH = f"push_msg ({SP}/libp2p/pubsub/pubsub.py:1704)"
SCHED = f"run ({SP}/trio/_core/_run.py:2300)"
EPOLL = f"EpollIOManager.get_events ({SP}/trio/_core/_io_epoll.py:243)"


def test_frames_are_grouped_by_package_and_libp2p_or_node_subpackage() -> None:
    assert frame_group(PUSH) == "libp2p.pubsub"
    assert frame_group(READ) == "node.overrides"
    assert frame_group(RUN) == "node.app"
    assert frame_group(SCHED) == "trio"
    assert frame_group(PARSE) == "google"
    assert frame_group("select (/usr/lib/python3.11/selectors.py:468)") == "stdlib"
    # cProfile's file names (bench/idle_profile.py's profile) go through the same rules
    assert path_group(f"{SP}/libp2p/stream_muxer/yamux/yamux.py") == "libp2p.stream_muxer"
    assert path_group(f"{SP}/multiaddr/multiaddr.py") == "multiaddr"
    assert path_group("/w/node/chain/service.py") == "node.chain"
    assert path_group("~") == "builtins" and path_group("<frozen os>") == "builtins"


def test_self_time_goes_to_the_leaf_inclusive_counts_a_recursing_frame_once(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "n.stacks"
    raw.write_text(
        f"{SCHED};{RUN};{PUSH};{PARSE} 6\n"
        f"{SCHED};{RUN};{READ} 3\n"
        f"{SCHED};{PUSH};{PUSH} 1\n"
        f"{SCHED};{EPOLL} 5\n"
        "\n"
        "a line that is not a stack\n"
    )
    got = shares(raw)
    assert got.samples == 10  # the 5 waiting in epoll are idle, not part of the shares
    assert got.idle == 5
    assert got.by_group == {"google": 0.6, "node.overrides": 0.3, "libp2p.pubsub": 0.1}
    assert got.top_self[0] == ("google:ParseFromString:199", 0.6)
    inclusive = dict(got.top_inclusive)
    assert inclusive["trio:run:2300"] == 1.0
    assert inclusive["libp2p.pubsub:push_msg:1704"] == 0.7  # 6 + 1, not 6 + 2
    assert inclusive["node.app:run:40"] == 0.9


def test_an_empty_recording_has_no_shares(tmp_path: Path) -> None:
    raw = tmp_path / "n.stacks"
    raw.write_text("")
    assert shares(raw).samples == 0
