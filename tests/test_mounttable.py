"""The one mount table (probe._mounttable): the parser on crafted lines, then
the same questions asked of real mounts the kernel made."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from probe._mounttable import (
    find_mount,
    mount_at,
    mount_of,
    mounts,
    mounts_under,
    parse_mountinfo,
    umount,
    under,
    unescape,
)
from probe.lab._mounts import MS_BIND, sys_mount

# proc(5)'s own example, then lines as the kernel writes them for names with
# a space, a tab, a newline and a backslash, a bind mount of a subdirectory,
# no optional fields, several optional fields, and a non-UTF-8 byte.
LINES = (
    b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    b"40 36 0:50 / /tmp/a\\040b\\011c\\012d\\134e rw,relatime shared:7 - tmpfs my\\040src "
    b"rw,size=1024k\n"
    b"41 36 7:3 /sub/dir /srv/bind rw - btrfs /dev/loop3 rw,compress=zstd:3,space_cache=v2\n"
    b"42 36 0:51 / /x rw,nosuid shared:2 master:1 propagate_from:1 unbindable - "
    b"fuse.fakefs fakefs:/tmp/ctl\\040dir/sock rw,user_id=0\n"
    b"43 36 0:52 / /caf\xe9 ro - overlay overlay ro,lowerdir=/l1:/l2,upperdir=/u\n"
)


def test_parses_proc5_example() -> None:
    e = parse_mountinfo(LINES)[0]
    assert (e.mount_id, e.parent_id, e.device) == (36, 35, "98:0")
    assert (e.root, e.mount_point) == ("/mnt1", "/mnt2")
    assert e.options == ("rw", "noatime") and e.optional == ("master:1",)
    assert (e.fstype, e.source) == ("ext3", "/dev/root")
    assert e.super_options == ("rw", "errors=continue")
    assert e.all_options == "rw,noatime,errors=continue"
    assert e.devno == (98, 0)


def test_unescapes_space_tab_newline_backslash_in_every_path_field() -> None:
    e = parse_mountinfo(LINES)[1]
    assert e.mount_point == "/tmp/a b\tc\nd\\e"
    assert e.source == "my src"
    assert e.super_options == ("rw", "size=1024k")
    fuse = parse_mountinfo(LINES)[3]
    assert fuse.source == "fakefs:/tmp/ctl dir/sock"


def test_escaped_backslash_followed_by_digits_is_not_unescaped_twice() -> None:
    # A directory literally named "\101": the kernel writes "\134101".
    assert unescape(b"/d/\\134101") == "/d/\\101"
    # Digits 8/9 are not octal: left as they are.
    assert unescape(b"/d/\\089") == "/d/\\089"


def test_optional_fields_any_number_then_the_separator() -> None:
    bind, fuse = parse_mountinfo(LINES)[2], parse_mountinfo(LINES)[3]
    assert bind.optional == () and bind.fstype == "btrfs"
    assert bind.root == "/sub/dir"  # a bind of a subdirectory shows where it came from
    assert bind.super_options == ("rw", "compress=zstd:3", "space_cache=v2")
    assert fuse.optional == ("shared:2", "master:1", "propagate_from:1", "unbindable")
    assert fuse.fstype == "fuse.fakefs"


def test_non_utf8_names_round_trip_as_file_names() -> None:
    e = parse_mountinfo(LINES)[4]
    assert os.fsencode(e.mount_point) == b"/caf\xe9"
    assert "lowerdir=/l1:/l2" in e.super_options


def test_junk_and_truncated_lines_are_skipped() -> None:
    text = b"garbage\n\n1 2 3:4 / /a rw - tmpfs\n" + LINES
    assert [e.mount_id for e in parse_mountinfo(text)] == [36, 40, 41, 42, 43]


def test_find_mount_picks_deepest_and_last_and_prefers_the_device() -> None:
    table = parse_mountinfo(
        b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        b"2 1 0:40 / /srv rw - tmpfs t1 rw\n"
        b"3 1 0:41 / /srv rw - tmpfs t2 rw\n"  # stacked on the same point: hides 2
        b"4 1 0:42 / /srvx rw - tmpfs t3 rw\n"  # a name prefix is not a parent
    )
    assert find_mount("/srv/a/b", os.makedev(0, 41), table).source == "t2"  # type: ignore[union-attr]
    assert find_mount("/srvx", os.makedev(0, 42), table).source == "t3"  # type: ignore[union-attr]
    assert find_mount("/etc", os.makedev(8, 1), table).source == "/dev/sda1"  # type: ignore[union-attr]
    assert mount_at("/srv", table).source == "t2"  # type: ignore[union-attr]
    assert [e.source for e in mounts_under("/srv", table)] == ["t1", "t2"]
    assert under("/srv/a", "/srv") and under("/srv", "/srv/") and not under("/srvx", "/srv")


# ------------------------------------------------------------ real mounts

WEIRD = "we ird\tna\\me\nx"


def test_real_mount_with_hostile_name(tmpfs_dir: Path) -> None:
    target = tmpfs_dir / WEIRD
    target.mkdir()
    sys_mount("cowprobe test src", target, "tmpfs", 0, "size=1m,mode=0700")
    try:
        e = mount_at(target)
        assert e is not None and e.mount_point == str(target)
        assert (e.fstype, e.source) == ("tmpfs", "cowprobe test src")
        assert "size=1024k" in e.super_options and "mode=700" in e.super_options
        (target / "f").write_text("x")
        assert mount_of(target / "f") == e
        assert mount_of(tmpfs_dir) != e
        assert [m.mount_point for m in mounts_under(tmpfs_dir)] == [str(target)]
    finally:
        umount(target)
    assert mount_at(target) is None
    with pytest.raises(OSError) as err:
        umount(target)
    assert err.value.errno == errno.EINVAL  # not a mountpoint any more


def test_real_bind_mount_shows_its_root(btrfs_dir: Path, tmpfs_dir: Path) -> None:
    sub = btrfs_dir / "sub dir"
    sub.mkdir()
    target = tmpfs_dir / "bind"
    target.mkdir()
    sys_mount(str(sub), target, None, MS_BIND, "")
    try:
        e = mount_at(target)
        assert e is not None and e.fstype == "btrfs"
        assert e.root.endswith("/sub dir")
        origin = mount_of(btrfs_dir)
        assert origin is not None and origin.device == e.device
        assert os.stat(target).st_dev == os.stat(sub).st_dev
    finally:
        umount(target)


def test_busy_mount_is_detached_lazily(tmpfs_dir: Path) -> None:
    target = tmpfs_dir / "busy"
    target.mkdir()
    sys_mount("cowprobe-busy", target, "tmpfs", 0, "size=1m")
    fd = os.open(target / "held", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        with pytest.raises(OSError) as err:
            umount(target, detach_if_busy=False)
        assert err.value.errno == errno.EBUSY
        umount(target)  # EBUSY again, so MNT_DETACH
        assert mount_at(target) is None
        os.write(fd, b"still usable through the detached mount")
    finally:
        os.close(fd)


def test_this_process_table_is_read() -> None:
    table = mounts()
    assert any(e.mount_point == "/" for e in table)
    assert any(e.fstype == "proc" and e.mount_point == "/proc" for e in table)


_OWN_LIBC = ("probe/_libc.py",)


def test_one_reader_of_mountinfo_and_one_libc_loader() -> None:
    repo = Path(__file__).resolve().parent.parent
    offenders = []
    for tree in ("probe", "fakefs", "docker"):
        for path in sorted((repo / tree).rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(repo).as_posix()
            if "/proc/self/mountinfo" in text and rel != "probe/_mounttable.py":
                offenders.append(f"{rel} reads mountinfo")
            if ("CDLL(" in text or "find_library" in text) and rel not in _OWN_LIBC:
                offenders.append(f"{rel} loads libc")
    assert offenders == []
