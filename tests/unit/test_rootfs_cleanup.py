"""An interrupted debootstrap leaves proc and sys mounted in its rootfs: the cleanup must
unmount them first and never delete through a mount into the host's files."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.errors import SentrynetError
from harness.infra import images


def test_mounts_under_reads_mountinfo_with_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root fs"
    root.mkdir()
    esc = str(root).replace(" ", "\\040")
    info = tmp_path / "mountinfo"
    info.write_text(
        f"22 1 0:21 / {esc}/proc rw - proc proc rw\n"
        f"23 1 0:22 / {esc}/sys rw - sysfs sysfs rw\n"
        f"24 1 0:23 / {esc}-other rw - tmpfs tmpfs rw\n"
        "25 1 0:24 / /proc rw - proc proc rw\n"
    )
    assert images.mounts_under(root, str(info)) == [f"{root}/proc", f"{root}/sys"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root (CI runs as root)")
def test_remove_rootfs_unmounts_proc_before_deleting() -> None:
    rootfs = Path(tempfile.mkdtemp(prefix="sentrynet-rootfs-test-", dir="/var/tmp"))
    (rootfs / "proc").mkdir()
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "hostname").write_text("x")
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    try:
        assert images.mounts_under(rootfs) == [str(rootfs / "proc")]
        images.remove_rootfs(rootfs)
        assert not rootfs.exists()
        assert Path("/proc/self/status").exists()  # the host's /proc is untouched
    finally:
        subprocess.run(["umount", "-l", str(rootfs / "proc")], check=False, capture_output=True)


def test_remove_rootfs_refuses_when_a_mount_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "sys").mkdir(parents=True)
    monkeypatch.setattr(images, "mounts_under", lambda root: [str(rootfs / "sys")])
    with pytest.raises(SentrynetError, match="still mounted"):
        images.remove_rootfs(rootfs)
    assert rootfs.exists()
