"""Scenario results: `results/<run-id>/` with report.json, junit.xml, node logs, the final
status of every node, their event histories and the connection graph; `results/latest`.

report.json is the contract CI and people read:
    {"scenario", "passed", "checks": [{"name", "passed", "seconds", "detail"}], ...}
`seconds` is the time from `up` until the check held (or gave up); expected-negative
checks carry `"expect": "impossible"|"fails"` and pass when shown impossible; failed checks
carry `likely_cause`. Extra top-level keys: run_id, testnet, topology, started_at,
duration_s, up_seconds, kept (testnet left up), error (when the run itself broke), machine
(the load average and cores when the testnet was ready and at the end, and whether the
machine was saturated: harness/infra/load.py).

Collecting artifacts never raises: a missing log is noted in report.json `artifacts`,
it does not hide the check results.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.run.steps import CheckOutcome

RESULTS_DIR = "results"


def run_id(scenario: str, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '_', scenario)}"


def new_run_dir(root: str | Path, scenario: str) -> Path:
    """Create results/<run-id>/ (unique even for two runs in one second) and point
    results/latest at it (a relative symlink, replaced atomically)."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    rid = run_id(scenario)
    path = base / rid
    n = 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            n += 1
            path = base / f"{rid}.{n}"
    point_latest(base, path)
    return path


def point_latest(base: Path, target: Path) -> None:
    link = base / "latest"
    tmp = base / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.name)
    os.replace(tmp, link)


def build_report(
    scenario: str,
    outcomes: list[CheckOutcome],
    **extra: Any,
) -> dict[str, Any]:
    """The report.json document. A run with no checks, or an error, never passes."""
    passed = bool(outcomes) and all(o.passed for o in outcomes) and not extra.get("error")
    doc: dict[str, Any] = {
        "scenario": scenario,
        "passed": passed,
        "checks": [o.to_json() for o in outcomes],
    }
    doc.update({k: v for k, v in extra.items() if v is not None})
    return doc


def write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


def _impl_tag(doc: dict[str, Any]) -> str:
    """`[rust]` for a run on another implementation than the file as written, `[swarm]` for
    a run on the swarm engine (both: `[rust,swarm]`), else ''."""
    impl = doc.get("impl") or "python"
    tags = [t for t in (impl if impl != "python" else "", doc.get("engine") or "") if t]
    tags = [t for t in tags if t != "compose"]
    return f"[{','.join(tags)}]" if tags else ""


def junit_xml(doc: dict[str, Any]) -> str:
    """JUnit XML for CI: one testsuite per scenario, one testcase per check."""
    checks = doc.get("checks") or []
    suite_name = f"sentrynet.scenario.{doc['scenario']}{_impl_tag(doc)}"
    failures = sum(1 for c in checks if not c.get("passed"))
    suite = ET.Element(
        "testsuite",
        {
            "name": suite_name,
            "tests": str(len(checks)),
            "failures": str(failures),
            "errors": "1" if doc.get("error") else "0",
            "time": f"{float(doc.get('duration_s') or 0):.2f}",
        },
    )
    if doc.get("started_at"):
        suite.set("timestamp", str(doc["started_at"]))
    for c in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": suite_name,
                "name": str(c["name"]),
                "time": f"{float(c.get('seconds') or 0):.2f}",
            },
        )
        text = str(c.get("detail", ""))
        if c.get("likely_cause"):
            text += f"\nlikely cause: {c['likely_cause']}"
        if c.get("passed"):
            out = ET.SubElement(case, "system-out")
            out.text = (f"expected {c['expect']}: " if c.get("expect") else "") + text
        else:
            fail = ET.SubElement(
                case, "failure", {"message": text.splitlines()[0][:300] if text else "failed"}
            )
            fail.text = text
    if doc.get("error"):
        case = ET.SubElement(suite, "testcase", {"classname": suite_name, "name": "run"})
        err = ET.SubElement(case, "error", {"message": str(doc["error"]).splitlines()[0][:300]})
        err.text = str(doc["error"])
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_results(run_dir: Path, doc: dict[str, Any]) -> None:
    write_json(run_dir / "report.json", doc)
    (run_dir / "junit.xml").write_text(junit_xml(doc))


def save_artifacts(
    run_dir: Path,
    *,
    statuses: dict[str, dict[str, Any] | None] | None = None,
    status_errors: dict[str, Any] | None = None,
    events: dict[str, list[dict[str, Any]]] | None = None,
    logs: Iterable[str] = (),
    read_log: Callable[[str], str] | None = None,
    graph: Callable[[Path], list[str]] | None = None,
) -> dict[str, Any]:
    """Write status/<node>.json, events/<node>.jsonl, logs/<name>.log and the graph files.

    Returns what was written and what failed, for report.json `artifacts`.
    """
    out: dict[str, Any] = {"written": [], "errors": []}

    def attempt(what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
            out["written"].append(what)
        except Exception as exc:
            out["errors"].append(f"{what}: {type(exc).__name__}: {exc}")

    if statuses is not None:
        sdir = run_dir / "status"
        sdir.mkdir(exist_ok=True)
        for name, st in sorted(statuses.items()):
            why = (status_errors or {}).get(name, "no status")
            doc = st if st is not None else (why if isinstance(why, dict) else {"error": why})
            attempt(
                f"status/{name}.json", functools.partial(write_json, sdir / f"{name}.json", doc)
            )
    if events is not None:
        edir = run_dir / "events"
        edir.mkdir(exist_ok=True)
        for name, evs in sorted(events.items()):
            lines = "".join(json.dumps(e, default=str) + "\n" for e in evs)
            attempt(f"events/{name}.jsonl", functools.partial(_wt, edir / f"{name}.jsonl", lines))
    if read_log is not None:
        ldir = run_dir / "logs"
        ldir.mkdir(exist_ok=True)
        for name in logs:
            attempt(f"logs/{name}.log", functools.partial(_write_log, ldir, name, read_log))
    if graph is not None:
        try:
            out["written"] += graph(run_dir)
        except Exception as exc:
            out["errors"].append(f"graph: {type(exc).__name__}: {exc}")
    return out


def _wt(path: Path, text: str) -> None:
    path.write_text(text)


def _write_log(ldir: Path, name: str, read_log: Callable[[str], str]) -> None:
    _wt(ldir / f"{name}.log", read_log(name))


def _saturated_line(machine: dict[str, Any]) -> str:
    """report.json `machine` of a run on a saturated machine, said under the table."""
    said = []
    for when in ("at_ready", "at_end"):
        m = machine.get(when) or {}
        if m.get("loadavg"):
            said.append(f"{m['loadavg'][0]:g} {when.replace('_', ' ')}")
    cores = next((m["cores"] for m in machine.values() if isinstance(m, dict) and m), "?")
    return (
        f"machine saturated: load average {', '.join(said)} on {cores} core(s); "
        "timings and timeouts here reflect this machine (harness/infra/load.py)"
    )


def summary_table(doc: dict[str, Any], width: int = 100) -> str:
    """The table `sentrynet scenario` prints at the end: check, result, seconds, detail; a
    failed check gets a second line with its likely cause."""
    rows: list[tuple[str, str, str, str, str]] = [("check", "result", "seconds", "detail", "")]
    for c in doc.get("checks") or []:
        result = "PASS" if c.get("passed") else "FAIL"
        if c.get("expect"):
            result += f" ({c['expect']})"
        secs = "-" if c.get("seconds") is None else f"{float(c['seconds']):.1f}"
        detail = " ".join(str(c.get("detail", "")).split())
        cause = "" if c.get("passed") else " ".join(str(c.get("likely_cause") or "").split())
        rows.append((str(c["name"]), result, secs, detail, cause))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    indent = sum(w) + 6
    room = max(30, width - indent)

    def cut(text: str, n: int) -> str:
        return text if len(text) <= n else text[: n - 3] + "..."

    lines = []
    for i, r in enumerate(rows):
        lines.append(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {cut(r[3], room)}".rstrip())
        if r[4]:
            lines.append(" " * indent + cut(f"likely cause: {r[4]}", room))
        if i == 0:
            lines.append("-" * min(width, indent + room))
    n_ok = sum(1 for c in doc.get("checks") or [] if c.get("passed"))
    verdict = "PASSED" if doc.get("passed") else "FAILED"
    lines.append(
        f"scenario {doc['scenario']}{_impl_tag(doc)}: {verdict} "
        f"({n_ok}/{len(doc.get('checks') or [])} checks)"
    )
    if doc.get("error"):
        lines.append(f"run error: {doc['error']}")
    if (machine := doc.get("machine") or {}).get("saturated"):
        lines.append(_saturated_line(machine))
    if doc.get("conclusion"):
        lines.append(textwrap.fill(f"conclusion: {doc['conclusion']}", width))
    return "\n".join(lines)
