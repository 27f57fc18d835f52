"""fakefs runs as root: an unprivileged user of the mount must not get it to
read or write anything outside the backing directory, whatever names they
swap in between, and no rule may destroy the backing directory itself.

The attacks run as nobody (``setpriv --reuid=65534``) through a real mount
made with allow_other, against files a root-owned directory outside the
backing directory holds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _files import NOBODY, world_dir

import fakefs
from probe.pytest_plugin import require_fakefs

SECRET = b"root-only secret\n"
VICTIM = b"root-owned original\n"


@dataclass
class Arena:
    fs: fakefs.FakeFS
    pub: Path  # world-writable (sticky) directory inside the mount
    back_pub: Path  # the same directory in the backing store
    outside: Path  # root-owned, 0755, outside the backing directory
    base: Path

    def as_nobody(self, script: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NOBODY, "sh", "-c", script], cwd=cwd or self.pub,
                              capture_output=True, text=True, check=False, timeout=60)


@contextlib.contextmanager
def _arena(prepare: Callable[[Path], None] | None = None) -> Iterator[Arena]:
    """The arena; ``prepare(backing)`` runs before the mount."""
    require_fakefs()
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        from probe.pytest_plugin import require

        require(False, "the attacks need root (to mount) and setpriv (to drop to nobody)")
    with world_dir("fakefs-sec-") as base:
        backing, mnt, outside = base / "backing", base / "mnt", base / "outside"
        for d in (backing, mnt, outside):
            d.mkdir(mode=0o755)
        (backing / "pub").mkdir()
        (backing / "pub").chmod(0o1777)
        (outside / "secret").write_bytes(SECRET)
        (outside / "secret").chmod(0o600)
        (outside / "victim").write_bytes(VICTIM)
        (outside / "victim").chmod(0o644)
        if prepare is not None:
            prepare(backing)
        with fakefs.mount(backing, mnt) as fs:
            yield Arena(fs, mnt / "pub", backing / "pub", outside, base)


@pytest.fixture
def arena() -> Iterator[Arena]:
    with _arena() as a:
        yield a


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


#: Put into the daemon as sitecustomize (through PYTHONPATH): wraps one os
#: function so that, the first time the daemon calls it for ``name``, the
#: attacker's swap runs to completion right before or right after the real
#: call -- inside the window, with nothing timed. The daemon waits for it;
#: the swap touches only the backing directory, never the mount.
SWAP_HOOK = """
import json, os, subprocess
_spec = json.loads(os.environ.pop("FAKEFS_TEST_SWAP", "null"))
if _spec:
    _real = getattr(os, _spec["func"])
    _armed = [True]

    def _swap():
        _armed.clear()
        subprocess.run(_spec["argv"], cwd=_spec["cwd"], check=True)
        with open(_spec["mark"], "a") as f:
            f.write("swapped\\n")

    def _hooked(*args, **kwargs):
        hit = bool(_armed) and _spec["name"] in args
        if _spec["func"] == "open":  # the creating open only, not a lookup's
            hit = hit and bool(args[1] & os.O_CREAT)
        if hit and _spec["when"] == "before":
            _swap()
        result = _real(*args, **kwargs)
        if hit and _spec["when"] == "after":
            _swap()
        return result

    setattr(os, _spec["func"], _hooked)
    # shutil.rmtree asks these whether os.stat takes dir_fd
    for _supports in (os.supports_dir_fd, os.supports_fd, os.supports_follow_symlinks):
        if _real in _supports:
            _supports.add(_hooked)
"""


@contextlib.contextmanager
def _swapping(monkeypatch: pytest.MonkeyPatch, func: str, name: str, when: str,
              script: str) -> Iterator[tuple[Arena, Path]]:
    """An arena whose daemon runs ``script`` as nobody in backing/open (a
    world-writable directory without the sticky bit, holding root's
    entries nobody may rename) inside the window of ``func(name)``."""
    hook = Path(tempfile.mkdtemp(prefix="fakefs-hook-"))
    try:
        (hook / "sitecustomize.py").write_text(SWAP_HOOK)
        # The hook may run while the daemon thread acts as the caller,
        # without root's capabilities (vanish): the mark must be writable.
        hook.chmod(0o755)
        mark = hook / "swapped"
        mark.touch(mode=0o666)
        mark.chmod(0o666)
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
            filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
        opened: list[Path] = []

        def prepare(backing: Path) -> None:
            back_open = backing / "open"
            back_open.mkdir()
            back_open.chmod(0o777)
            opened.append(back_open)
            spec = {"func": func, "name": name, "when": when, "mark": str(mark),
                    "cwd": str(back_open), "argv": [*NOBODY, "sh", "-ec", script]}
            monkeypatch.setenv("FAKEFS_TEST_SWAP", json.dumps(spec))

        with _arena(prepare) as a:
            yield a, opened[0]
            assert mark.read_text() == "swapped\n", "the swap never ran: the test proved nothing"
    finally:
        shutil.rmtree(hook, ignore_errors=True)


def _root_entry(back_open: Path, kind: str) -> Path:
    planted = back_open / f"root-{kind}"
    if kind == "mkdir":
        planted.mkdir(mode=0o755)
        (planted / "inner").write_bytes(VICTIM)
    elif kind == "mknod":
        os.mkfifo(planted, 0o644)
    elif kind == "symlink":
        planted.symlink_to("/etc/shadow")
    else:
        planted.write_bytes(VICTIM)
        planted.chmod(0o644)
    return planted


@pytest.mark.parametrize(("op", "shell"), [("mkdir", "mkdir new"), ("mknod", "mkfifo new"),
                                          ("symlink", "ln -s anywhere new")])
def test_entry_swapped_after_it_is_made_is_never_given_to_the_caller(
    monkeypatch: pytest.MonkeyPatch, op: str, shell: str
) -> None:
    # Right after the daemon made backing/open/new, nobody (writing in the
    # backing directory itself) moves it aside and puts root's entry of the
    # same type there. A daemon that made it as root and chowned "new" to
    # the caller by name gave root's entry to nobody.
    script = f"mv new mine && mv root-{op} new"
    with _swapping(monkeypatch, op, "new", "after", script) as (a, back_open):
        planted = _root_entry(back_open, op)
        res = a.as_nobody(shell, cwd=a.pub.parent / "open")
        assert not os.path.lexists(planted)  # it is "new" now
        st = os.lstat(back_open / "new")
        assert (st.st_uid, st.st_gid) == (0, 0)  # and still root's
        # The daemon refused what it found (ESTALE: the kernel looked the
        # name up again and answered EEXIST, as the name is taken).
        assert res.returncode != 0
        assert "File exists" in res.stderr, res.stderr
        # What it made is nobody's own, wherever the swap moved it.
        assert os.lstat(back_open / "mine").st_uid == 65534
        if op == "mkdir":
            assert os.stat(back_open / "new" / "inner").st_uid == 0
        _outside_untouched(a)


def test_file_planted_before_create_is_not_opened_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel's LOOKUP found no "new"; before its CREATE arrives, nobody
    # renames root's 0644 file to that name in the backing directory. Opened
    # as root without O_EXCL, it was written through and chowned to nobody.
    with _swapping(monkeypatch, "open", "new", "before", "mv root-create new") as (a, back_open):
        _root_entry(back_open, "create")
        res = a.as_nobody("echo pwned > new", cwd=a.pub.parent / "open")
        st = os.stat(back_open / "new")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)
        assert (back_open / "new").read_bytes() == VICTIM
        # The kernel retried the open of the name as it is now (ESTALE) and
        # checked nobody's permission on root's file itself: the answer a
        # local filesystem gives.
        assert res.returncode != 0
        assert "Permission denied" in res.stderr, res.stderr
        _outside_untouched(a)


def test_vanish_tree_never_empties_a_directory_swapped_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # Right after the daemon checked that backing/open/d is the node's
    # directory, nobody moves it aside and puts root's directory there. A
    # daemon that then removes the tree by name empties root's directory.
    with _swapping(monkeypatch, "stat", "d", "after", "mv d mine && mv root-mkdir d") as (
            a, back_open):
        (back_open / "d").mkdir()
        (back_open / "d" / "f").write_bytes(b"ours\n")
        # nobody's own tree: the vanish removes what nobody could remove.
        for own in (back_open / "d", back_open / "d" / "f"):
            os.chown(own, 65534, 65534)
        planted = _root_entry(back_open, "mkdir")
        a.fs.add_fault("getattr:open/d:vanish-tree")
        res = a.as_nobody("stat d >/dev/null", cwd=a.pub.parent / "open")
        assert res.returncode == 0, res.stderr
        assert not os.path.lexists(planted)
        assert (back_open / "d" / "inner").read_bytes() == VICTIM
        assert os.stat(back_open / "d").st_uid == 0
        # What was the node's lost its contents (through its descriptor);
        # its name moved on, so nothing more went.
        assert os.listdir(back_open / "mine") == []
        _outside_untouched(a)


@contextlib.contextmanager
def _daemon_groups(groups: tuple[int, ...]) -> Iterator[None]:
    """The test process's supplementary groups, and so those of a daemon
    started inside the block."""
    saved = os.getgroups()
    os.setgroups(list(groups))
    try:
        yield
    finally:
        os.setgroups(saved)


@pytest.mark.parametrize("group", [0, 4242], ids=["root-group", "daemon-supplementary-group"])
def test_vanish_tree_never_removes_what_its_caller_may_not(group: int) -> None:
    # nobody owns d and U; U holds root's directory R, whose file nobody
    # may not remove. nobody moves U into d, then fires the vanish-tree
    # rule on d. A daemon removing the tree as root (or as nobody but with
    # root's supplementary groups: R is group-writable for group 4242,
    # which only the daemon has) deletes root's file.
    def prepare(backing: Path) -> None:
        pub = backing / "pub"
        (pub / "d").mkdir()
        (pub / "d" / "own").write_bytes(b"ours\n")
        (pub / "U" / "R").mkdir(parents=True)
        (pub / "U" / "R" / "inner").write_bytes(VICTIM)
        (pub / "U" / "R" / "inner").chmod(0o644)
        os.chown(pub / "U" / "R", 0, group)
        (pub / "U" / "R").chmod(0o775 if group else 0o755)
        for own in (pub / "d", pub / "d" / "own", pub / "U"):
            os.chown(own, 65534, 65534)

    with _daemon_groups((group,) if group else ()), _arena(prepare) as a:
        # Moved first: mv's own stat of d would fire the rule.
        res = a.as_nobody("mv U d/")
        assert res.returncode == 0, res.stderr
        a.fs.add_fault("getattr:pub/d:vanish-tree")
        res = a.as_nobody("stat d >/dev/null")
        assert res.returncode == 0, res.stderr
        inner = a.back_pub / "d" / "U" / "R" / "inner"
        assert inner.read_bytes() == VICTIM
        assert os.stat(inner.parent).st_uid == 0
        # What nobody may remove went; the rest, and so the tree, stayed.
        assert not (a.back_pub / "d" / "own").exists()
        assert a.fs.counters()["vanished"] == 0
        _outside_untouched(a)


def test_vanish_never_unlinks_a_name_swapped_in_after_its_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Right after the daemon checked that backing/pub/f is the node's file,
    # nobody moves it aside and puts root's file there, taken from
    # backing/open (where nobody may remove it; in the sticky pub only its
    # owner may). unlinkat removes a name, not an inode: a daemon unlinking
    # as root removes root's file; as nobody, the sticky bit refuses it.
    script = "mv ../pub/f ../pub/mine && mv root-create ../pub/f"
    with _swapping(monkeypatch, "stat", "f", "after", script) as (a, back_open):
        (a.back_pub / "f").write_bytes(b"ours\n")
        os.chown(a.back_pub / "f", 65534, 65534)
        _root_entry(back_open, "create")
        a.fs.add_fault("getattr:pub/f:vanish")
        res = a.as_nobody("stat f >/dev/null")
        assert res.returncode == 0, res.stderr
        st = os.stat(a.back_pub / "f")
        assert (st.st_uid, st.st_gid) == (0, 0)
        assert (a.back_pub / "f").read_bytes() == VICTIM
        assert (a.back_pub / "mine").read_bytes() == b"ours\n"
        assert a.fs.counters()["vanished"] == 0
        _outside_untouched(a)


def test_a_refused_vanish_is_no_hit_and_the_rule_waits(arena: Arena) -> None:
    # Root's file in the sticky pub: nobody's stat fires the rule, but
    # nobody may not remove it, so nothing vanished -- counting that as a
    # hit would report a fault no caller saw, and spend its one firing.
    (arena.back_pub / "f").write_bytes(VICTIM)
    arena.fs.add_fault("getattr:pub/f:vanish")
    res = arena.as_nobody("stat f >/dev/null")
    assert res.returncode == 0, res.stderr
    assert (arena.back_pub / "f").read_bytes() == VICTIM
    assert [f["hits"] for f in arena.fs.faults()] == [0]
    # Root's own stat may remove it: the rule still had its one firing.
    os.stat(arena.pub / "f")
    assert not (arena.back_pub / "f").exists()
    assert [f["hits"] for f in arena.fs.faults()] == [1]
    assert arena.fs.counters()["vanished"] == 1
    _outside_untouched(arena)
