"""The docs a newcomer reads stay short, linked and self-contained.

- README.md fits on two screens (at most 200 lines).
- Every relative link in README.md, CONTRIBUTING.md and docs/*.md resolves to a file in the
  checkout, and a `#fragment` to a heading of the target page.
- Nothing in the repository points outside it: no path into the sibling shared folder and
  no design notes but docs/design.md (FORBIDDEN below).
- A comment that names a section of the design page (the page's path followed by the
  section's title in double quotes) names one that exists.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 200
DOC_PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) outside code; images too. Targets with a scheme (https:, mailto:) are skipped.
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
FENCE_RE = re.compile(r"^(```|~~~)")
SECTION_REF_RE = re.compile(r'docs/design\.md\s*\(?\s*"([^"]+)"')
# Assembled so this file does not match what it forbids.
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md", "DESIGN" + "'s")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE_RE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(page: Path) -> list[str]:
    found, fenced = [], False
    for line in page.read_text().splitlines():
        if FENCE_RE.match(line.strip()):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.append(m.group(1))
    return found


def repo_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files: what a clone would carry."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        reason = "not a git checkout: cannot list the repository's files"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI=true: a clean clone is a git checkout; do not skip)")
        pytest.skip(reason)
    return [ROOT / p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def test_readme_fits_on_two_screens() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it <= {README_MAX_LINES} and move "
        "reference material to docs/"
    )


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK_RE.findall(prose(page.read_text())):
        if SCHEME_RE.match(target):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if fragment and dest.suffix == ".md":
            anchors = {anchor(h) for h in headings(dest)}
            if fragment not in anchors:
                broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_nothing_points_outside_the_repository() -> None:
    hits = []
    for path in repo_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files (plots) say nothing
        for lineno, line in enumerate(text.splitlines(), 1):
            for word in FORBIDDEN:
                if word in line:
                    hits.append(f"{path.relative_to(ROOT)}:{lineno}: {word}")
    assert not hits, "point at docs/design.md instead:\n" + "\n".join(hits)


def test_design_sections_named_in_the_code_exist() -> None:
    sections = set(headings(ROOT / "docs" / "design.md"))
    missing = []
    for path in repo_files():
        if path.suffix not in {".py", ".j2", ".sh", ".md", ".yaml", ".yml", ""}:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        # a reference may wrap across a comment line break: join the lines first
        joined = re.sub(r"\n\s*(#|//)?\s*", " ", text)
        for name in SECTION_REF_RE.findall(joined):
            if name not in sections:
                missing.append(f"{path.relative_to(ROOT)}: {name!r}")
    assert not missing, "docs/design.md has no such section:\n" + "\n".join(missing)
