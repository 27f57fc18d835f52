"""fakefs runs as root: an unprivileged user of the mount must not get it to
read or write anything outside the backing directory, whatever names they
swap in between, and no rule may destroy the backing directory itself.

The attacks run as nobody (``setpriv --reuid=65534``) through a real mount
made with allow_other, against files a root-owned directory outside the
backing directory holds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import fakefs
from probe.pytest_plugin import require_fakefs

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SECRET = b"root-only secret\n"
VICTIM = b"root-owned original\n"


@dataclass
class Arena:
    fs: fakefs.FakeFS
    pub: Path  # world-writable (sticky) directory inside the mount
    back_pub: Path  # the same directory in the backing store
    outside: Path  # root-owned, 0755, outside the backing directory

    def as_nobody(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NOBODY, "sh", "-c", script], cwd=self.pub, capture_output=True,
                              text=True, check=False, timeout=60)


@pytest.fixture
def arena() -> Iterator[Arena]:
    require_fakefs()
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        from probe.pytest_plugin import require

        require(False, "the attacks need root (to mount) and setpriv (to drop to nobody)")
    # Not under pytest's tmp_path: nobody cannot traverse /tmp/pytest-of-root.
    base = Path(tempfile.mkdtemp(prefix="fakefs-sec-", dir="/tmp"))
    try:
        base.chmod(0o755)
        backing, mnt, outside = base / "backing", base / "mnt", base / "outside"
        for d in (backing, mnt, outside):
            d.mkdir(mode=0o755)
        (backing / "pub").mkdir()
        (backing / "pub").chmod(0o1777)
        (outside / "secret").write_bytes(SECRET)
        (outside / "secret").chmod(0o600)
        (outside / "victim").write_bytes(VICTIM)
        (outside / "victim").chmod(0o644)
        with fakefs.mount(backing, mnt) as fs:
            yield Arena(fs, mnt / "pub", backing / "pub", outside)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _outside_untouched(a: Arena) -> None:
    assert sorted(p.name for p in a.outside.iterdir()) == ["secret", "victim"]
    assert (a.outside / "secret").read_bytes() == SECRET
    assert (a.outside / "victim").read_bytes() == VICTIM
    assert stat.S_IMODE((a.outside / "secret").stat().st_mode) == 0o600


def test_swapped_hard_link_does_not_read_a_root_only_file(arena: Arena) -> None:
    # The kernel knows f's inode; a second name g of it is then replaced by
    # a symlink to the secret. A daemon that remembers "the inode lives at
    # g" opens backing/pub/g as root and follows the symlink.
    res = arena.as_nobody(
        f"echo mine > f && cat f >/dev/null && ln f g && rm g && ln -s {arena.outside}/secret g"
        " && cat f"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "mine\n"
    assert SECRET.decode() not in res.stdout
    assert os.readlink(arena.back_pub / "g") == f"{arena.outside}/secret"
    _outside_untouched(arena)


def test_swapped_hard_link_does_not_overwrite_a_root_owned_file(arena: Arena) -> None:
    res = arena.as_nobody(
        f"echo mine > f && cat f >/dev/null && ln f g && rm g && ln -s {arena.outside}/victim g"
        " && echo pwned > f && echo pwned >> f && cat f"
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "pwned\npwned\n"
    assert (arena.back_pub / "f").read_bytes() == b"pwned\npwned\n"
    _outside_untouched(arena)


def test_backing_directory_swapped_for_a_symlink_keeps_writes_inside(arena: Arena) -> None:
    # nobody also works directly in the (world-writable) backing directory:
    # after the kernel cached d, d is renamed away there and replaced by a
    # symlink to a root-owned directory. A path-resolving daemon would
    # create mnt/pub/d/planted as backing/pub/d/planted -> outside/planted.
    back = arena.back_pub
    res = arena.as_nobody(
        f"mkdir d && ls d >/dev/null && mv {back}/d {back}/d.old && ln -s {arena.outside} {back}/d"
        " && echo planted > d/planted && echo more > d/victim; ls d.old"
    )
    assert not (arena.outside / "planted").exists()
    _outside_untouched(arena)
    # The writes went where the kernel's d is: the renamed directory.
    assert (back / "d.old" / "planted").read_bytes() == b"planted\n", res.stderr


def test_vanish_never_removes_the_root_or_a_directory(tmp_path: Path) -> None:
    require_fakefs()
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    (backing / "keep").mkdir()
    (backing / "keep" / "inner").write_text("precious\n")
    (backing / "file").write_text("x\n")
    with fakefs.mount(backing, mnt) as fs:
        rid = fs.add_fault("getattr:*:vanish")
        os.stat(mnt)
        os.stat(mnt / "keep")
        assert (backing / "keep" / "inner").read_text() == "precious\n"
        assert [e["hits"] for e in fs.faults()] == [0]
        os.stat(mnt / "file")  # the first non-directory it sees
        assert not (backing / "file").exists()
        assert fs.counters()["vanished"] == 1
        fs.remove_fault(rid)
        tree = fs.add_fault("getattr:keep:vanish-tree")
        assert [e["rule"] for e in fs.faults()] == ["getattr:keep:vanish-tree"]
        os.stat(mnt / "keep")
        assert not (backing / "keep").exists()
        assert [e["hits"] for e in fs.faults() if e["id"] == tree] == [1]
        fs.add_fault("*:*:vanish-tree")
        os.stat(mnt)
        os.listdir(mnt)
    assert backing.is_dir()
