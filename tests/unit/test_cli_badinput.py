"""Bad input to the CLI ends in one named error line and a non-zero exit, never a traceback
(issue 16): a topology that is not UTF-8, a null `config:`, `--out` naming a file, an
engine URL where no engine answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.cli import main

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "scenarios" / "mini.yaml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_topology_not_utf8_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(MINI.read_bytes().replace(b"description: one", b"description: \xe9one"))
    code, err = run(["analyse", str(bad)], capsys)
    assert code != 0 and "Traceback" not in err
    assert f"{bad}: line " in err and "not UTF-8" in err


def test_null_config_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(MINI.read_text())
    doc["nodes"]["val-a"]["config"] = None
    path = tmp_path / "null.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, err = run(["analyse", str(path)], capsys)
    assert code != 0 and "nodes.val-a.config: empty (null)" in err


@pytest.mark.parametrize("sub", ["", "/below"])
def test_out_naming_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sub: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code, err = run(["render", str(MINI), "--out", f"{afile}{sub}"], capsys)
    assert code != 0 and "Traceback" not in err
    assert f"--out {afile}{sub}:" in err and "file" in err
    assert afile.read_text() == "mine"  # nothing lost


def test_ship_to_an_engine_that_does_not_answer_names_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"unix://{tmp_path}/no-engine.sock"
    code, err = run(["images", "ship", "--to", url], capsys)
    assert code != 0 and "Traceback" not in err
    assert f"--to {url}: no Docker engine answers there" in err
