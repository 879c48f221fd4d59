"""Docker Compose, v2 (`docker compose`) where present, else v1 (`docker-compose`).

The rendered docker-compose.yml is the one source of truth for what runs, so starting a
testnet is `compose up`. Tear-down does NOT depend on compose (see harness/run/cleanup.down):
it must work without the rendered directory and after a start that failed half way.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SentrynetError

INSTALL_HINT = (
    "neither `docker compose` (v2) nor `docker-compose` (v1) was found; install one, e.g. "
    "`apt-get install docker-compose` (Debian) or the Docker Compose plugin"
)


@functools.cache
def compose_command() -> tuple[str, ...]:
    """The compose executable as argv prefix; v2 preferred. Raises when neither exists."""
    if shutil.which("docker"):
        try:
            probe = subprocess.run(
                ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise SentrynetError(INSTALL_HINT)


def compose_version() -> str:
    """One line naming the compose in use, for progress output and bug reports."""
    argv = [*compose_command(), "version"]
    if argv[0] == "docker-compose":
        argv.append("--short")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    line = (out.stdout or out.stderr).strip().splitlines()
    return f"{' '.join(compose_command())} {line[0] if line else '?'}"


@dataclass(frozen=True)
class Compose:
    """One compose project: the rendered file plus the project name (= testnet name)."""

    project: str
    file: Path

    def _argv(self, *args: str) -> list[str]:
        return [*compose_command(), "-p", self.project, "-f", str(self.file), *args]

    def run(self, *args: str, timeout_s: float = 600) -> str:
        """Run a compose subcommand; raise with the tail of its output when it fails."""
        argv = self._argv(*args)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=self.file.parent,
            )
        except subprocess.TimeoutExpired as exc:
            raise SentrynetError(
                f"`{' '.join(argv)}` did not finish within {timeout_s:g}s"
            ) from exc
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise SentrynetError(f"`{' '.join(argv)}` failed (exit {done.returncode}):\n{tail}")
        return done.stdout

    def up(self) -> None:
        # --no-build: images are built by harness/infra/images.py, never by compose.
        self.run("up", "-d", "--no-build", "--remove-orphans")

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "5")

    def ps(self) -> str:
        return self.run("ps")

    def logs(self, service: str, tail: int | None = None) -> str:
        args = ["logs", "--no-color"]
        if tail is not None:
            args += ["--tail", str(tail)]
        return self.run(*args, service)
