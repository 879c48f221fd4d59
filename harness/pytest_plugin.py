"""pytest plugin (entry point `pytest11: sentrynet`): Docker testnets and scenarios as fixtures.

Fixtures (module scope: one testnet per test module, shared by its tests):
- `testnet(topology) -> RunningTestnet`: bring `scenarios/<topology>.yaml` up under a unique
  name (harness/run/runner.bring_up); torn down when the module ends (unless
  --sentrynet-keep). `running.observe()` is a status/events snapshot;
  `running.wait_for(check, deadline_s)` polls a
  check (harness/checks) and on timeout raises WaitTimeout with what was last seen and the
  likely cause.
- `scenario_report(name, impl="python", engine="compose") -> dict`: run scenario `name` (a
  name under scenarios/library/ or a scenario file; its unpinned nodes on `impl`, its data
  networks on `engine`: local bridges, or overlays of a Docker Swarm) once on a testnet
  of its own, write results/<run-id>/ like `sentrynet scenario --impl IMPL`, return
  report.json's document. The previous scenario's testnet is torn down
  when the next scenario starts (and the last one at module end), so one module can hold
  every scenario (scenarios/test_scenarios.py) without running several testnets at once.
- `assert_check(doc, name)`: fail a test with the check's detail and likely cause.
- `require_rust_image()`: in a test whose testnet runs rust nodes: skip locally without
  cargo, fail with CI=true (the interop tier's rule, tests/interop/conftest.py).

scenarios/test_scenarios.py makes one test per check row of every scenario file.
Options: --sentrynet-keep (leave testnets up), --sentrynet-results DIR (default results).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import pytest

from harness import scenarios
from harness.model.testnet import DEFAULT_ENGINE
from harness.progress import Progress
from harness.run import cleanup, report, runner, setup
from harness.run.steps import pending_outcomes
from harness.run.testnet import RunningTestnet


def pytest_configure(config: pytest.Config) -> None:
    # the controller of pytest-xdist workers (-n N): workers carry `workerinput`
    xdist_controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(
        config, "workerinput"
    )
    sigterm_unwinds(forward_to_children=xdist_controller)
    if xdist_controller:
        give_workers_time_to_tear_down()
    if hasattr(config, "workerinput"):
        let_this_worker_finish_tearing_down()


def sigterm_unwinds(forward_to_children: bool = False) -> None:
    """SIGTERM (a CI job's timeout, `kill`) becomes a KeyboardInterrupt in pytest's main
    thread, so pytest unwinds and runs every fixture's teardown: testnets and network
    namespaces are removed instead of leaked (the default SIGTERM ends the process on the
    spot). A handler someone else installed is left alone.

    `forward_to_children` (the controller of pytest-xdist workers, `make test`'s scenario
    tier): the workers, which hold the testnets, get the SIGTERM first. Told only to exit,
    a worker busy in a check interrupts itself after 5 s and xdist kills it after 10 s,
    which can cut its testnet's teardown short; signalled, each tears down at once (and
    give_workers_time_to_tear_down lets it finish)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if forward_to_children:
            for pid in child_pids(os.getpid()):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        raise cleanup.Terminated(f"signal {signum} (SIGTERM): tearing down")

    signal.signal(signal.SIGTERM, handler)


WORKER_TEARDOWN_S = 120  # how long xdist waits for a worker to exit before it kills it


def give_workers_time_to_tear_down() -> None:
    """pytest-xdist (3.x, `NodeManager.EXIT_TIMEOUT`) kills a worker that has not exited 10 s
    after it was told to. A worker interrupted by SIGTERM tears its testnet down first: two
    testnets torn down side by side took 8 s on an idle machine, too close to 10 s for a
    loaded one (the likely cause of a CI failure of tests/docker/test_lifecycle.py's
    SIGTERM test). The wait ends when the workers
    exit; the bound only matters for a worker that hangs. A pytest-xdist without that
    attribute is told on stderr: its workers may then be killed mid-teardown."""
    try:
        from xdist.workermanage import NodeManager

        NodeManager.EXIT_TIMEOUT = max(NodeManager.EXIT_TIMEOUT, WORKER_TEARDOWN_S)
    except (ImportError, AttributeError) as exc:
        print(
            f"sentrynet: cannot give pytest-xdist workers {WORKER_TEARDOWN_S} s to tear "
            f"their testnets down ({type(exc).__name__}: {exc}); an interrupted run may "
            "leave testnets behind: `sentrynet down --all` removes them",
            file=sys.stderr,
        )


def let_this_worker_finish_tearing_down() -> None:
    """The worker's own side of the same limit. When the controller ends its session
    (after a SIGTERM), execnet (2.x, `WorkerGateway._terminate_execution`) waits 5 s for
    the worker's pytest to finish, sends it a SIGINT, and calls os._exit(1) 10 s later:
    a worker still removing its testnet is cut off half way (seen: a scenario testnet left
    with one container removed of eleven, CPU loaded). Here the SIGINT still comes after
    5 s (it interrupts a worker busy in a check); the exit only after WORKER_TEARDOWN_S.
    An execnet without that method is told on stderr."""
    try:
        from execnet import gateway_base

        gateway = gateway_base.WorkerGateway
        gateway._terminate_execution  # noqa: B018 - the method this replaces must exist
    except (ImportError, AttributeError) as exc:
        print(
            f"sentrynet: cannot give this pytest-xdist worker time to tear its testnet down "
            f"({type(exc).__name__}: {exc}); an interrupted run may leave it behind",
            file=sys.stderr,
        )
        return

    def terminate_execution(self: Any) -> None:  # runs on execnet's receiver thread
        self._execpool.trigger_shutdown()
        if self._execpool.waitall(5.0):
            return
        os.kill(os.getpid(), signal.SIGINT)
        if not self._execpool.waitall(float(WORKER_TEARDOWN_S)):
            os._exit(1)

    setattr(gateway, "_terminate_execution", terminate_execution)  # noqa: B010


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` (from /proc; empty where there is none)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(parent):
            out.append(int(stat.parent.name))
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sentrynet", "sentrynet Docker testnets")
    group.addoption(
        "--sentrynet-keep",
        action="store_true",
        default=False,
        help="leave scenario testnets up after the tests (inspect, then `sentrynet down NAME`)",
    )
    group.addoption(
        "--sentrynet-results",
        default=None,
        metavar="DIR",
        help="where scenario results go (default: results, or $SENTRYNET_RESULTS)",
    )


def _opt(config: pytest.Config, name: str, env: str, default: Any) -> Any:
    value = config.getoption(name, default=None)
    if value in (None, False):
        value = os.environ.get(env) or default
    return value


def _keep(config: pytest.Config) -> bool:
    return bool(_opt(config, "sentrynet_keep", "SENTRYNET_KEEP", False))


def _results(config: pytest.Config) -> str:
    return str(_opt(config, "sentrynet_results", "SENTRYNET_RESULTS", report.RESULTS_DIR))


@pytest.fixture(scope="module")
def testnet(request: pytest.FixtureRequest) -> Iterator[Callable[[str], RunningTestnet]]:
    """testnet(topology) -> RunningTestnet; one per topology per test module, down at module
    end."""
    started: dict[str, RunningTestnet] = {}
    progress = Progress()

    def get(topology: str) -> RunningTestnet:
        if topology not in started:
            started[topology] = runner.bring_up(topology, progress=progress)
        return started[topology]

    yield get
    for running in started.values():
        if _keep(request.config):
            progress.say(f"testnet {running.name} kept (`sentrynet down {running.name}`)")
        else:
            progress.say(running.down())


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_unless_ci(reason: str, in_ci_because: str) -> NoReturn:
    """A test that cannot run here: it skips locally (the reason shows with -ra) and FAILS
    with CI=true, where what it needs is there by construction (`in_ci_because` says why)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: {in_ci_because})")
    pytest.skip(reason)


def require_rust_image() -> None:
    """A test whose testnet has rust nodes needs the rust node image, built with cargo on the
    host: without cargo it skips locally (the reason shows with -ra) and FAILS with CI=true,
    as the interop tier does (tests/interop/conftest.py): CI has cargo, so a missing one
    there is a broken CI."""
    from harness.infra.rust_image import CARGO_HELP, find_cargo

    if find_cargo() is not None:
        return
    skip_unless_ci(
        f"cargo not found on PATH or in ~/.cargo/bin: {CARGO_HELP}",
        "rust scenario variants must run, they may not skip",
    )


@pytest.fixture(scope="module")
def scenario_report(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., dict[str, Any]]]:
    """scenario_report(name, impl="python", engine="compose") -> report.json document; each
    (scenario, impl, engine) runs once per module, on its own testnet (down before the next
    one comes up)."""
    done: dict[tuple[str, str, str], dict[str, Any]] = {}
    current: list[RunningTestnet] = []
    progress = Progress()

    def release() -> None:
        while current:
            running = current.pop()
            if _keep(request.config):
                progress.say(f"testnet {running.name} kept (`sentrynet down {running.name}`)")
            else:
                progress.say(running.down())

    def get(
        name: str, impl: str = scenarios.DEFAULT_IMPL, engine: str = DEFAULT_ENGINE
    ) -> dict[str, Any]:
        if (name, impl, engine) not in done:
            sc = scenarios.get(name, impl)
            claim_run(name, impl, engine)
            release()
            try:
                running = runner.bring_up(
                    sc.topology,
                    name=setup.unique_name(sc.run_label),
                    progress=progress,
                    engine=engine,
                )
            except Exception as exc:  # up failed: every check fails with the reason
                doc, run_dir = runner.write_report(
                    sc,
                    None,
                    pending_outcomes(sc, [], f"the testnet did not come up: {exc}"),
                    results_root=_results(request.config),
                    progress=progress,
                    error=f"up failed: {exc}",
                )
            else:
                current.append(running)
                doc, run_dir = runner.execute(
                    sc,
                    running,
                    progress=progress,
                    results_root=_results(request.config),
                    kept=_keep(request.config),
                )
            doc["results_dir"] = str(run_dir)
            done[(name, impl, engine)] = doc
        return done[(name, impl, engine)]

    yield get
    release()


def claim_run(name: str, impl: str, engine: str) -> None:
    """Under pytest-xdist (`make test` runs the scenario tier with -n 2), fail when another
    worker of this session already ran the same testnet: the scheduler split one testnet's
    checks across workers, each of which would bring it up again (twice the time, two
    reports). scenarios/test_scenarios.py keeps them in one class for --dist loadscope;
    this makes a scheduler that stops honouring that (xdist_group did, with pytest 9.2)
    a failure instead of a silently doubled run. Outside xdist: nothing to check."""
    run_uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_uid:
        return
    claims = Path(tempfile.gettempdir()) / f"sentrynet-xdist-{run_uid}"
    claims.mkdir(exist_ok=True)
    try:
        (claims / f"{name}@{impl}@{engine}").touch(exist_ok=False)
    except FileExistsError:
        pytest.fail(
            f"scenario {name} ({impl}, {engine}) already ran on another xdist worker of this "
            "session: its checks were split across workers. Run the scenario tier with "
            "--dist loadscope (make test does) or without -n.",
            pytrace=False,
        )


def assert_check(doc: dict[str, Any], name: str) -> None:
    """Pass when check `name` of a report passed; else fail with what was seen."""
    found = [c for c in doc.get("checks") or [] if c.get("name") == name]
    if not found:
        pytest.fail(f"scenario {doc.get('scenario')} has no check {name!r}", pytrace=False)
    c = found[0]
    if c.get("passed"):
        return
    secs = c.get("seconds")
    msg = f"{doc.get('scenario')}/{name} failed" + (f" after {secs:.1f}s" if secs else "")
    msg += f":\n  seen: {c.get('detail')}"
    if c.get("likely_cause"):
        msg += f"\n  likely cause: {c['likely_cause']}"
    if doc.get("results_dir"):
        msg += f"\n  results: {doc['results_dir']}"
    pytest.fail(msg, pytrace=False)


@pytest.fixture
def check_passed() -> Callable[[dict[str, Any], str], None]:
    """assert_check as a fixture, for test modules that prefer not to import it."""
    return assert_check


@pytest.fixture(scope="session")
def _docker_ready() -> None:
    """Docker-marked items outside tests/ (scenarios/) get this from tests/conftest.py's
    collection hook; same rule as there: skip locally without a daemon, fail with CI=true."""
    from harness.errors import SentrynetError
    from harness.infra.images import docker_client

    try:
        docker_client(timeout=10)
    except SentrynetError as exc:
        if in_ci():
            pytest.fail(f"{exc} (CI=true: Docker tests must run, they may not skip)")
        pytest.skip(str(exc))
