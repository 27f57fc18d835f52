"""The lab itself: it builds real filesystems, and leaves nothing behind --
after a clean exit, a failing body, a half-failed setup, or a SIGKILL -- and
never touches a lab that is still alive.

Labs made here live under a private base directory, so no other engineer's
reaper (every new lab reaps stale ones under /tmp) can race these checks.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _kernel_view import loops_under, mounts_under

from probe.lab import (
    KINDS,
    LANES,
    Lab,
    LabUnavailable,
    cleanup_stale,
    missing_prerequisites,
    parse_size,
    parse_sizes,
)
from probe.pytest_plugin import require

pytest_plugins = ("pytester",)

FSTYPES = {"btrfs": "btrfs", "xfs": "xfs", "xfs-noreflink": "xfs", "ext4": "ext4", "tmpfs": "tmpfs"}

# A lab in another process: prints its root and devices, then holds the lab
# until its stdin closes (the clean way to end it) or it is killed.
CHILD = """
import json, sys
from probe.lab import Lab
with Lab(sys.argv[2:], base_dir=sys.argv[1]) as lab:
    bind = lab.bind_mount(lab.kinds[0])
    print(json.dumps({"root": str(lab.root), "bind": str(bind),
                      "devices": [fs.device for fs in lab if fs.device]}), flush=True)
    sys.stdin.read()
"""




def assert_gone(root: Path) -> None:
    assert mounts_under(root) == [], "findmnt still shows the lab's mounts"
    assert loops_under(root) == [], "losetup -a still shows the lab's images"
    assert not root.exists()


@pytest.fixture
def base() -> Iterator[Path]:
    b = Path(tempfile.mkdtemp(prefix="cowprobe-test-labs-", dir="/tmp"))
    try:
        yield b
    finally:
        cleanup_stale(b)  # whatever a failing test left
        leftovers = mounts_under(b)
        assert leftovers == [], f"test left mounts behind: {leftovers}"
        for entry in b.iterdir():
            assert not entry.is_dir(), f"test left a lab root behind: {entry}"
        b.rmdir()


class Child:
    def __init__(self, base: Path, *kinds: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(base), *kinds],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the lab is up
        assert line, f"child lab failed to start (exit {self.proc.wait()})"
        self.info: dict[str, Any] = json.loads(line)
        self.root = Path(self.info["root"])

    def finish(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(120)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(120)  # reaped: no zombie left that still "owns" the lab


# ------------------------------------------------------------ prerequisites


def test_this_machine_has_every_prerequisite() -> None:
    assert missing_prerequisites(KINDS) == []


def test_missing_tools_are_named(tmp_path: Path) -> None:
    missing = missing_prerequisites(("xfs", "ext4", "tmpfs"), path=str(tmp_path))
    assert any(m.startswith("mkfs.xfs missing") for m in missing), missing
    assert any(m.startswith("mkfs.ext4 missing") for m in missing), missing
    assert any(m.startswith("losetup missing") for m in missing), missing
    # tmpfs needs no tool
    assert missing_prerequisites(("tmpfs",), path=str(tmp_path)) == []


def test_not_root_is_named_and_raises_lab_unavailable() -> None:
    # Privileges are dropped inside the child after its imports: the
    # interpreter itself may live where an unprivileged user cannot read.
    script = (
        "import os\n"
        "from probe.lab import Lab, LabUnavailable\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    Lab(('tmpfs',)).__enter__()\n"
        "except LabUnavailable as e:\n"
        "    print(e)\n"
        "else:\n"
        "    print('BUILT')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("not root (running as uid 65534"), proc.stdout


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="nosuchfs"):
        Lab(("btrfs", "nosuchfs"))


# ------------------------------------------------------------- the session lab


@pytest.mark.parametrize("kind", KINDS)
def test_session_lab_has_a_real_mount_of_each_kind(cowprobe_lab: Lab, kind: str) -> None:
    fs = cowprobe_lab[kind]
    fstype = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", str(fs.mountpoint)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert fstype == FSTYPES[kind] == fs.fstype
    assert cowprobe_lab.path(kind) == fs.mountpoint
    if kind == "tmpfs":
        assert fs.device is None and fs.image is None
        return
    assert fs.device is not None and fs.image is not None
    backing = Path(f"/sys/block/{Path(fs.device).name}/loop/backing_file").read_text().strip()
    assert backing == str(fs.image)
    st = fs.image.stat()
    assert st.st_blocks * 512 < st.st_size, "the image must be sparse"


def test_xfs_variants_differ_in_reflink(cowprobe_lab: Lab) -> None:
    info = {
        k: subprocess.run(
            ["xfs_info", str(cowprobe_lab.path(k))], capture_output=True, text=True, check=True
        ).stdout
        for k in ("xfs", "xfs-noreflink")
    }
    assert "reflink=1" in info["xfs"]
    assert "reflink=0" in info["xfs-noreflink"]


def test_scratch_dirs_are_fresh_empty_and_on_their_filesystem(cowprobe_lab: Lab) -> None:
    a = cowprobe_lab.scratch_dir("ext4", "same")
    b = cowprobe_lab.scratch_dir("ext4", "same")
    assert a != b
    assert os.listdir(a) == os.listdir(b) == []
    assert os.stat(a).st_dev == os.stat(cowprobe_lab.path("ext4")).st_dev
    with pytest.raises(ValueError):
        cowprobe_lab.scratch_dir("ext4", "a/b")


def test_bind_mounts(cowprobe_lab: Lab) -> None:
    d = cowprobe_lab.scratch_dir("btrfs", "bind")
    rel = d.relative_to(cowprobe_lab.path("btrfs"))
    rw, ro = cowprobe_lab.bind_mount("btrfs"), cowprobe_lab.readonly_bind("btrfs")
    assert rw != ro and len(mounts_under(rw)) == 1 and len(mounts_under(ro)) == 1
    (rw / rel / "through-bind").write_bytes(b"x")
    assert (d / "through-bind").read_bytes() == b"x"
    assert (ro / rel / "through-bind").read_bytes() == b"x"
    with pytest.raises(OSError) as exc:
        (ro / rel / "new").write_bytes(b"x")
    assert exc.value.errno == errno.EROFS
    # The filesystem itself stays writable.
    (d / "still-writable").write_bytes(b"y")


# ---------------------------------------------------------------- teardown


def test_teardown_leaves_nothing(base: Path) -> None:
    with Lab(KINDS, base_dir=base) as lab:
        root = lab.root
        lab.bind_mount("btrfs")
        lab.readonly_bind("xfs")
        lab.make_tiny("ext4", 8)
        (lab.scratch_dir("btrfs", "busy") / "f").write_bytes(b"x" * 100_000)
        assert len(mounts_under(root)) == len(KINDS) + 3
        assert len(loops_under(root)) == 5  # 4 loop-backed kinds + the tiny ext4
    assert_gone(root)
    assert lab.build_seconds is not None and lab.teardown_seconds is not None


def test_teardown_after_a_failing_body(base: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        Lab(("btrfs", "tmpfs"), base_dir=base) as lab,
    ):
        root = lab.root
        lab.readonly_bind("btrfs")
        raise RuntimeError("test body failed")
    assert_gone(root)


def test_teardown_with_a_file_held_open(base: Path) -> None:
    # A leaked descriptor makes umount say EBUSY; the lab must still get
    # its mount out of the tree and free the loop device once it closes.
    with Lab(("btrfs",), base_dir=base) as lab:
        root = lab.root
        fd = os.open(lab.scratch_dir("btrfs", "held") / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        assert mounts_under(root) == []
        assert not root.exists()
    finally:
        os.close(fd)
    assert loops_under(root) == []


def test_half_failed_setup_is_torn_down(base: Path) -> None:
    # mkfs.xfs refuses a 16 MiB image while the others build fine.
    lab = Lab(("btrfs", "xfs", "tmpfs"), base_dir=base, sizes_mb={"xfs": 16})
    with pytest.raises(LabUnavailable, match=r"xfs: mkfs\.xfs failed"):
        lab.__enter__()
    assert list(base.iterdir()) == []
    assert mounts_under(base) == []
    assert loops_under(base) == []


def test_two_labs_built_at_once_get_distinct_loop_devices(base: Path) -> None:
    # Four threads in two labs racing `losetup --find`: nobody assumes a
    # device number, and a lost race is retried, not fatal.
    labs = [Lab(("btrfs", "xfs", "ext4"), base_dir=base, reap_stale=False) for _ in range(2)]
    errors: list[BaseException] = []

    def build(lab: Lab) -> None:
        try:
            lab.start()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=build, args=(lab,)) for lab in labs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == []
        devices = [fs.device for lab in labs for fs in lab]
        assert len(set(devices)) == 6
    finally:
        roots = [lab.root for lab in labs if lab.build_seconds is not None]
        for lab in labs:
            lab.close()
    for root in roots:
        assert_gone(root)


# ------------------------------------------------------ stale and live labs


def test_killed_lab_is_cleaned_by_the_next_cleanup_stale(base: Path) -> None:
    child = Child(base, "btrfs", "xfs", "tmpfs")
    child.kill()
    # The premise: SIGKILL left everything behind.
    assert len(mounts_under(child.root)) == 4
    assert len(loops_under(child.root)) == 2

    assert cleanup_stale(base) == [child.root]
    assert_gone(child.root)
    for dev in child.info["devices"]:
        backing = Path(f"/sys/block/{Path(dev).name}/loop/backing_file")
        assert not backing.exists() or not backing.read_text().startswith(str(child.root))


def test_live_lab_of_another_process_is_not_touched(base: Path) -> None:
    child = Child(base, "btrfs", "tmpfs")
    try:
        before = mounts_under(child.root)
        assert cleanup_stale(base) == []
        with Lab(("tmpfs",), base_dir=base):  # a new lab reaps too
            pass
        assert mounts_under(child.root) == before
        assert len(loops_under(child.root)) == 1
        assert Path(child.info["bind"]).is_dir()
    finally:
        assert child.finish() == 0
    assert_gone(child.root)


def _owner(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "owner.json").read_text())
    return doc


def _start_ticks(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[19])


def test_owner_is_pid_and_start_time(base: Path) -> None:
    """A recycled pid is not the owner; the same pid *and* start time is."""
    child = Child(base, "tmpfs")
    child.kill()
    owner = _owner(child.root)
    me = os.getpid()

    try:
        # The dead owner's record now names a live process (us) with the
        # right start time: that is a live owner, hands off.
        (child.root / "owner.json").write_text(
            json.dumps({**owner, "pid": me, "start_ticks": _start_ticks(me)})
        )
        assert cleanup_stale(base) == []
        assert len(mounts_under(child.root)) == 2  # its tmpfs and the bind of it

        # Same live pid, different start time: a recycled pid, so stale.
        (child.root / "owner.json").write_text(
            json.dumps({**owner, "pid": me, "start_ticks": _start_ticks(me) + 1})
        )
        assert cleanup_stale(base) == [child.root]
        assert_gone(child.root)
    finally:
        if child.root.exists():  # hand it back to its dead owner for the fixture's reaper
            (child.root / "owner.json").write_text(json.dumps(owner))


def test_cleanup_ignores_what_is_not_a_lab(base: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid = dead.pid  # a pid whose process is gone
    (base / f"cowprobe-lab-{pid}-notadir").write_text("x")
    (base / f"cowprobe-lab-{pid}-symlink").symlink_to(base / "target")
    (base / "target").mkdir()
    (base / f"unrelated-{pid}").mkdir()
    # The one real stale lab here died before writing its owner file: the
    # pid in its name decides.
    (base / f"cowprobe-lab-{pid}-noowner").mkdir()

    assert cleanup_stale(base) == [base / f"cowprobe-lab-{pid}-noowner"]

    assert sorted(p.name for p in base.iterdir()) == sorted(
        [f"cowprobe-lab-{pid}-notadir", f"cowprobe-lab-{pid}-symlink", "target", f"unrelated-{pid}"]
    )
    for p in base.iterdir():
        if p.is_symlink() or p.is_file():
            p.unlink()
        else:
            p.rmdir()


# ------------------------------------------------------- real-suite sizes

_SUITE = '''
import os

import pytest

MIB = 1 << 20


@pytest.mark.parametrize("n", range(3))
def test_writes_100_mib(tmp_path, n):
    chunk = bytes([n + 1]) * MIB
    path = tmp_path / "big"
    with open(path, "wb") as fh:
        for _ in range(100):
            fh.write(chunk)
        os.fsync(fh.fileno())  # allocated now: a full fs says ENOSPC here, not later
    assert path.stat().st_size == 100 * MIB
    assert path.stat().st_blocks * 512 >= 100 * MIB  # really written, not a hole
'''


@pytest.mark.parametrize("kind", ["btrfs", "ext4", "tmpfs"])
def test_suite_writing_100_mib_per_test_passes_with_default_sizes(
    pytester: pytest.Pytester, kind: str
) -> None:
    require(not missing_prerequisites((kind,)), f"needs {kind}: {missing_prerequisites((kind,))}")
    pytester.makepyfile(test_suite=_SUITE)
    result = pytester.runpytest_subprocess(f"--cowprobe-tmp-fs={kind}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # The premise: the run really was on that filesystem.
    result.stdout.fnmatch_lines([f"cowprobe: tmp_path and TMPDIR on {kind}: *"])


def test_enospc_names_the_size_setting(pytester: pytest.Pytester) -> None:
    require(not missing_prerequisites(("tmpfs",)), "needs tmpfs (root)")
    pytester.makepyfile(test_suite=_SUITE)
    result = pytester.runpytest_subprocess(
        "--cowprobe-tmp-fs=tmpfs", "--cowprobe-lab-size=tmpfs=150M", "-p", "no:cacheprovider"
    )
    # The first test fits in 150 MiB, the second does not.
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*No space left on device*",
        "*cowprobe lab's tmpfs filesystem is 150 MiB and is full (ENOSPC); "
        "give it more room with --cowprobe-lab-size*",
    ])


def test_size_setting_grammar() -> None:
    assert parse_size("16G") == 16384 and parse_size("512") == 512 and parse_size("2048K") == 2
    assert parse_sizes("btrfs=32G, tmpfs=2g") == {"btrfs": 32768, "tmpfs": 2048}
    assert parse_sizes("8G") == dict.fromkeys(LANES, 8192)
    assert parse_sizes("overlay-ext4=1G") == {"overlay-ext4": 1024}
    for bad in ("", "lots", "btrfs=", "zfs=1G", "0"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_sizes_reach_the_filesystems(base: Path) -> None:
    with Lab(("ext4", "tmpfs"), base_dir=base, sizes_mb={"ext4": 1024, "tmpfs": 300}) as lab:
        ext4 = os.statvfs(lab.path("ext4"))
        assert ext4.f_bsize == 4096  # 4 KiB blocks even on a small image
        assert 900 * (1 << 20) < ext4.f_blocks * ext4.f_frsize <= 1024 * (1 << 20)
        assert "size=307200k" in lab["tmpfs"].options
        assert (lab["ext4"].size_mb, lab["tmpfs"].size_mb) == (1024, 300)
        image = lab["ext4"].image
        assert image is not None and image.stat().st_blocks * 512 < 64 * (1 << 20)  # sparse
