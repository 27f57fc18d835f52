"""Races and hostile inputs around clone-or-copy, on the real kernel:

* a symlink swapped in at the destination, or at its parent directory,
  between the library's check and its write never sends a byte outside the
  target tree (the swap is made deterministic by doing it from inside the
  clone call, through the platform seam, after the check and before the
  write);
* a FIFO, socket or device as the source is refused at once, never blocks;
* a SIGKILLed fakefs daemon and a SIGKILLed process holding a lab leave
  mounts behind that the next run removes.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from torture._harness import check_error, leftovers, loops_under, run_bounded
from torture._stale import fakefs_mounts_under, mounts_under, reap_stale

import probe
from probe import _platform
from probe.pytest_plugin import require

DATA = b"the source bytes\n" * 1000


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """target/ (where the dest belongs), outside/ (where nothing may land)."""
    t = {"src": tmp_path / "src", "target": tmp_path / "target", "outside": tmp_path / "outside"}
    t["src"].write_bytes(DATA)
    os.chmod(t["src"], 0o750)  # noqa: S103 -- an exec bit the copy must keep
    t["target"].mkdir()
    t["outside"].mkdir()
    (t["outside"] / "victim").write_bytes(b"must survive\n")
    yield t


def _swap_during_clone(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> list[int]:
    """Run ``swap`` inside the clone call (after the dest was checked and
    the temporary created, before any data is written), then answer
    EOPNOTSUPP so the copy fallback writes the data afterwards."""
    calls: list[int] = []

    def ficlone(dst_fd: int, src_fd: int) -> None:
        calls.append(dst_fd)
        swap()
        raise OSError(errno.EOPNOTSUPP, "swapped")

    plat = _platform.linux(ficlone)
    monkeypatch.setattr(_platform, "current", lambda: plat)
    return calls


def _outside_untouched(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_bytes() == b"must survive\n"


@pytest.mark.parametrize("existing", [False, True])
def test_symlink_swapped_in_at_the_dest_is_replaced_not_followed(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    dest = tree["target"] / "dest"
    if existing:
        dest.write_bytes(b"old\n")

    def swap() -> None:
        if existing:
            dest.unlink()
        dest.symlink_to(tree["outside"] / "victim")

    calls = _swap_during_clone(monkeypatch, swap)
    assert probe.clonefile_or_copy(tree["src"], dest) is False
    assert calls, "the clone hook never ran: the swap did not happen"
    _outside_untouched(tree["outside"])
    # The rename replaced the planted link itself.
    assert not dest.is_symlink()
    assert dest.read_bytes() == DATA
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750
    assert leftovers([tree["target"]]) == []


def test_parent_swapped_for_a_symlink_cannot_redirect_the_write(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tree["target"] / "dest"
    moved = tree["target"].with_name("target.moved")

    def swap() -> None:
        tree["target"].rename(moved)
        tree["target"].symlink_to(tree["outside"], target_is_directory=True)

    calls = _swap_during_clone(monkeypatch, swap)
    probe.clonefile_or_copy(tree["src"], dest)
    assert calls
    # Everything happened relative to the directory opened before the swap:
    # the file is in the (renamed) original directory, none went outside.
    _outside_untouched(tree["outside"])
    assert (moved / "dest").read_bytes() == DATA
    assert leftovers([moved, tree["outside"]]) == []


def test_symlink_swapped_in_at_the_dest_during_reflink_is_never_written(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw reflink creates the dest itself (O_EXCL|O_NOFOLLOW): a link
    planted at the name before that create makes it fail, not follow."""
    dest = tree["target"] / "dest"
    real_create = _platform.create_dest

    def create(name: str, mode: int = 0o600, *, dir_fd: int | None = None) -> int:
        os.symlink(tree["outside"] / "victim", name, dir_fd=dir_fd)
        return real_create(name, mode, dir_fd=dir_fd)

    monkeypatch.setattr(_platform, "create_dest", create)
    with pytest.raises(FileExistsError) as info:
        probe.reflink(tree["src"], dest)
    assert str(dest) in {info.value.filename, info.value.filename2}
    _outside_untouched(tree["outside"])


# ------------------------------------------------------------ special files


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(p))
    s.close()  # the socket inode stays on disk


def _chardev(p: Path) -> None:
    require(os.geteuid() == 0, "creating a device node needs root (mknod)")
    os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers


@pytest.mark.parametrize("make", [_fifo, _socket, _chardev], ids=["fifo", "socket", "chardev"])
@pytest.mark.parametrize("call", ["clonefile_or_copy", "reflink"])
def test_special_file_source_is_refused_without_blocking(
    tmp_path: Path, make: Callable[[Path], None], call: str
) -> None:
    src, dest = tmp_path / "special", tmp_path / "d" / "dest"
    dest.parent.mkdir()
    make(src)
    fn = getattr(probe, call)
    # A FIFO opened for reading without O_NONBLOCK would wait for a writer
    # forever: the bound turns that into a failure instead of a stuck run.
    out, _ = run_bounded(lambda: fn(src, dest), deadline=20.0)
    assert not out.hung, f"{call} blocked on a {make.__name__[1:]}"
    assert isinstance(out.error, probe.SpecialFileError), out.error
    assert out.error.errno == errno.EINVAL
    assert str(src) == out.error.filename
    assert "not a regular file" in str(out.error)
    assert os.listdir(dest.parent) == []


def test_check_error_accepts_exactly_the_clear_errors() -> None:
    """The torture suite's own judge: it must reject what it exists to catch."""
    from torture._schedule import Fault

    fired = [Fault("write", "d/x", 1, "ENOSPC")]
    good = OSError(errno.ENOSPC, "full", "/m/src", None, "/m/d/x")
    assert check_error(good, fired, {"/m/src", "/m/d/x"}) == []
    assert check_error(OSError(errno.ENOSPC, "full"), fired, {"/m/d/x"})  # no path
    assert check_error(OSError(errno.EEXIST, "x", "/m/d/x"), fired, {"/m/d/x"})  # wrong errno
    tmp = OSError(errno.ENOSPC, "full", "/m/d/.x.cowprobe-0a1b2c3d4e5f.tmp")
    assert check_error(tmp, fired, {"/m/d/x"})  # names our hidden temporary
    assert check_error(good, [], {"/m/src"})  # failed without any fault


# ------------------------------------------------------------ killed processes

_HOLD_FAKEFS = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import fakefs
    from torture._stale import new_base
    from pathlib import Path
    root = new_base(Path(sys.argv[2]))
    (root / "b").mkdir(); (root / "m").mkdir()
    cm = fakefs.mount(root / "b", root / "m")  # kept: collecting it would unmount
    fs = cm.__enter__()
    print(json.dumps({"root": str(root), "daemon": fs.pid, "control": fs.control}), flush=True)
    sys.stdin.read()
""")


def _spawn(code: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.wait()
        pytest.fail(f"helper process died before it was ready (status {proc.returncode})")
    return proc, json.loads(line)


def test_sigkilled_fakefs_daemon_and_holder_are_reaped_by_the_next_run(tmp_path: Path) -> None:
    from fakefs._mounts import reap_control_dirs
    from probe.pytest_plugin import require_fakefs

    require_fakefs()
    base = tmp_path / "base"
    base.mkdir()
    repo = str(Path(__file__).resolve().parent)
    proc, info = _spawn(_HOLD_FAKEFS, repo, str(base))
    root = Path(str(info["root"]))
    try:
        # Daemon first (so its lifeline cannot unmount), then its owner:
        # nothing is left alive to tear anything down.
        os.kill(int(str(info["daemon"])), signal.SIGKILL)
        proc.kill()
        proc.wait()
        # The premise: a dead mount ("Transport endpoint is not connected").
        assert fakefs_mounts_under(root) == [str(root / "m")]
        with pytest.raises(OSError) as dead:
            os.stat(root / "m" / "x")
        assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        assert reap_stale(base) == [root]
        assert mounts_under(root) == []
        assert not root.exists()
        # The daemon's control directory lives outside the tree; fakefs
        # itself reaps it (every new daemon does this first).
        ctl_dir = os.path.dirname(str(info["control"]))
        assert ctl_dir in reap_control_dirs()
        assert not os.path.exists(ctl_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap_stale(base)


def test_reaper_never_touches_a_live_owners_directory(tmp_path: Path) -> None:
    from torture._stale import new_base

    mine = new_base(tmp_path)
    try:
        assert reap_stale(tmp_path) == []
        assert mine.is_dir()
    finally:
        (mine / "owner").unlink()
        mine.rmdir()


_HOLD_LAB = textwrap.dedent("""
    import json, sys
    from probe.lab import Lab
    lab = Lab(("ext4", "tmpfs"), base_dir=sys.argv[1], reap_stale=False)
    lab.start()
    print(json.dumps({"root": str(lab.root)}), flush=True)
    sys.stdin.read()
""")


def test_sigkilled_lab_is_cleaned_up_by_the_next_lab(tmp_path: Path) -> None:
    from probe.lab import Lab, missing_prerequisites

    for reason in missing_prerequisites(("ext4", "tmpfs")):
        require(False, reason)
    base = tmp_path / "labs"
    base.mkdir()
    proc, info = _spawn(_HOLD_LAB, str(base))
    root = Path(str(info["root"]))
    try:
        proc.kill()
        proc.wait()
        # The premise: SIGKILL ran no teardown at all.
        assert len(mounts_under(root)) == 2
        assert loops_under(root)
        with Lab(("tmpfs",), base_dir=base) as lab:
            assert lab.root != root
            assert mounts_under(root) == []
            assert loops_under(root) == []
            assert not root.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        from probe.lab import cleanup_stale

        cleanup_stale(base)
    assert mounts_under(base) == []
