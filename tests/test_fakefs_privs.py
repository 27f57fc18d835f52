"""fakefs works as root, so wherever the kernel's answer depends on the
caller's capabilities, the backing filesystem would judge root instead:
set-ID bits kept on a file an unprivileged user rewrote (a setuid root
program of their choosing), ``trusted.*`` names listed to anyone.

Each case runs a foreign program as some user twice -- on a plain directory
and through the mount, both on the same filesystem -- and the kernel's
answer on the plain directory is the oracle the backing file must match.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from _files import world_dir

import fakefs
from probe.pytest_plugin import require, require_fakefs

NOGROUP = 65534
#: who runs the operation; "other" is in group 1 only, not in nogroup
USERS = {
    "nobody": ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    "other": ["setpriv", "--reuid=65534", "--regid=1", "--clear-groups"],
    "supplementary": ["setpriv", "--reuid=65534", "--regid=1", "--groups=65534"],
    "root": [],
    # uid 0, but CAP_FSETID / CAP_SYS_ADMIN gone from the exec'd shell: the
    # kernel goes by the capability, not by the uid
    "root-no-fsetid": ["setpriv", "--bounding-set=-fsetid"],
    "root-no-sys-admin": ["setpriv", "--bounding-set=-sys_admin"],
    # "root" with every capability -- in a user namespace of its own, where
    # none counts for the files of the initial one
    "userns-root": ["unshare", "--user", "--map-root-user"],
}
#: shell commands on "$1"; the redirections are the shell's own open()s
OPS = {
    "append": 'printf data >> "$1"',  # write(), no truncation
    "overwrite": 'cat /usr/bin/id > "$1"',  # open(O_TRUNC), then write()
    "trunc-open": ': > "$1"',  # open(O_TRUNC) alone
    "truncate": 'truncate -s 3 "$1"',  # ftruncate(): SETATTR with a size
}


@dataclass
class Site:
    fs: fakefs.FakeFS
    plain: Path  # a plain directory beside the backing one
    backing: Path
    mnt: Path

    def place(self, name: str, mode: int, gid: int) -> None:
        for d in (self.plain, self.backing):
            shutil.copyfile("/bin/true", d / name)
            # chown first: a chown removes set-ID bits itself
            os.chown(d / name, 0, gid)
            (d / name).chmod(mode)


def run_as(user: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    if user == "userns-root":
        probe = subprocess.run([*USERS[user], "true"], capture_output=True, check=False)
        require(probe.returncode == 0, "unshare --user cannot make a user namespace here: "
                + probe.stderr.decode(errors="replace").strip())
    return subprocess.run([*USERS[user], "sh", "-c", script, "sh", *args], capture_output=True,
                          text=True, check=False, timeout=60)


def _require_programs(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    require(not missing, f"these tests run {', '.join(missing)}, not found on PATH")


@pytest.fixture
def site() -> Iterator[Site]:
    require_fakefs()
    _require_programs("setpriv", "unshare", "sh", "cat", "truncate", "stat", "getfattr",
                      "setfattr")
    with world_dir("fakefs-privs-") as base:
        plain, backing, mnt = base / "plain", base / "backing", base / "mnt"
        for d in (plain, backing, mnt):
            d.mkdir(mode=0o755)
        with fakefs.mount(backing, mnt) as fs:
            yield Site(fs, plain, backing, mnt)


class Case(NamedTuple):
    mode: int
    gid: int
    user: str
    op: str
    rule: bool  # a rule names the file: direct I/O, no page cache
    after: int  # what the kernel leaves (checked against the plain directory too)


SUID, SGID_X, SGID_LOCK, BOTH = 0o4777, 0o2775, 0o2766, 0o6777
#: Cases marked "guard" passed before the fix as well: there the FUSE kernel
#: side removed the bits itself (a write through the page cache, a
#: truncate()), or nothing may be removed (root, a group member) -- they
#: keep the fix from removing too much, or the kernel's share from being lost.
CASES = {
    # (of these, "truncate" is a guard: the kernel sends its kill as a mode)
    **{f"suid-nobody-{op}-rule": Case(SUID, 0, "nobody", op, True, 0o777) for op in OPS},
    "suid-nobody-append-norule": Case(SUID, 0, "nobody", "append", False, 0o777),  # guard
    "suid-nobody-overwrite-norule": Case(SUID, 0, "nobody", "overwrite", False, 0o777),  # guard
    "suid-nobody-trunc-open-norule": Case(SUID, 0, "nobody", "trunc-open", False, 0o777),
    "suid-nobody-truncate-norule": Case(SUID, 0, "nobody", "truncate", False, 0o777),  # guard
    "sgid-x-member-append-rule": Case(SGID_X, NOGROUP, "nobody", "append", True, 0o775),
    "sgid-x-member-trunc-open-norule": Case(SGID_X, NOGROUP, "nobody", "trunc-open", False,
                                            0o775),
    # S_ISGID without S_IXGRP stays for a member of the file's group only;
    # the FUSE kernel side never removes it (its older rule wants S_IXGRP)
    "sgid-lock-nonmember-append-rule": Case(SGID_LOCK, NOGROUP, "other", "append", True, 0o766),
    "sgid-lock-nonmember-append-norule": Case(SGID_LOCK, NOGROUP, "other", "append", False,
                                              0o766),
    "sgid-lock-nonmember-truncate-norule": Case(SGID_LOCK, NOGROUP, "other", "truncate", False,
                                                0o766),
    "sgid-lock-member-append-rule": Case(SGID_LOCK, NOGROUP, "nobody", "append", True,
                                         SGID_LOCK),  # guard
    "sgid-lock-supplementary-append-rule": Case(SGID_LOCK, NOGROUP, "supplementary", "append",
                                                True, SGID_LOCK),  # guard
    **{f"both-root-{op}-rule": Case(BOTH, 0, "root", op, True, BOTH) for op in OPS},  # guard
    "both-root-trunc-open-norule": Case(BOTH, 0, "root", "trunc-open", False, BOTH),  # guard
    "both-root-no-fsetid-append-rule": Case(BOTH, 0, "root-no-fsetid", "append", True, 0o777),
    "suid-userns-root-append-rule": Case(SUID, 0, "userns-root", "append", True, 0o777),
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_set_id_bits_after_a_data_change_are_the_kernels(site: Site, case: Case) -> None:
    name = "f"
    site.place(name, case.mode, case.gid)
    if case.rule:
        # never fires (the file is not read a thousand times): it only
        # makes the file direct I/O, as every file a rule names is
        site.fs.add_fault(f"read:{name}:EIO:nth=1000")
    for d in (site.plain, site.mnt):
        res = run_as(case.user, OPS[case.op], str(d / name))
        assert res.returncode == 0, f"{d}: {res.stderr}"
    oracle = _mode(site.plain / name)
    assert oracle == case.after, f"the kernel left {oracle:o}, the case expects {case.after:o}"
    assert _mode(site.backing / name) == oracle
    # And the mount shows what is on disk: `stat -c %a` asks for the mode
    # alone, which the kernel answers from its cache while that is valid.
    shown = subprocess.run(["stat", "-c", "%a", str(site.mnt / name)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert int(shown, 8) == oracle
    assert (site.backing / name).read_bytes() == (site.plain / name).read_bytes()


def _xattr_file(site: Site) -> None:
    for d in (site.plain, site.backing):
        (d / "x").write_text("x\n")
        subprocess.run(["setfattr", "-n", "trusted.secretname", "-v", "v", str(d / "x")],
                       check=True)
        subprocess.run(["setfattr", "-n", "user.visible", "-v", "v", str(d / "x")], check=True)


def _names(user: str, path: Path) -> list[str]:
    res = run_as(user, 'getfattr --absolute-names -m - "$1"', str(path))
    assert res.returncode == 0, res.stderr
    return [ln for ln in res.stdout.splitlines() if ln and not ln.startswith("#")]


@pytest.mark.parametrize("user", ["nobody", "root-no-sys-admin", "userns-root", "root"])
def test_listxattr_shows_trusted_names_only_to_cap_sys_admin(site: Site, user: str) -> None:
    # "root" is the guard: with CAP_SYS_ADMIN the names are listed.
    _xattr_file(site)
    oracle = _names(user, site.plain / "x")
    assert ("trusted.secretname" in oracle) == (user == "root")
    assert "user.visible" in oracle
    assert _names(user, site.mnt / "x") == oracle


def test_trusted_get_and_set_are_refused_as_on_the_backing_fs(site: Site) -> None:
    # The VFS refuses these itself before FUSE is asked (xattr_permission);
    # checked so that stays true of the mount.
    _xattr_file(site)
    for script in ('getfattr --absolute-names -n trusted.secretname "$1"',
                   'setfattr -n trusted.planted -v 1 "$1"',
                   'setfattr -x trusted.secretname "$1"'):
        plain = run_as("nobody", script, str(site.plain / "x"))
        mounted = run_as("nobody", script, str(site.mnt / "x"))
        assert plain.returncode != 0
        assert mounted.returncode == plain.returncode
        assert mounted.stderr.replace(str(site.mnt), "D") == \
            plain.stderr.replace(str(site.plain), "D")
    names = subprocess.run(["getfattr", "--absolute-names", "-m", "-", str(site.backing / "x")],
                           capture_output=True, text=True, check=True).stdout
    assert "trusted.secretname" in names and "trusted.planted" not in names
