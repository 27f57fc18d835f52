"""Names: case sensitivity, Unicode normalization, and the real maximum
name length -- tried, because pathconf reports a constant that stacked and
network filesystems (eCryptfs, SMB, FUSE) do not always honour."""

from __future__ import annotations

import errno
import os

from ._context import ProbeContext, ProbeSpec, Trial, describe_errno
from ._model import Capability

__all__ = ["PROBES"]

_GROUP = "names"


def _lookup(ctx: ProbeContext, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=ctx.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _spelling_test(ctx: ProbeContext, t: Trial, stored: str, asked: str, *, what: str,
                   folding: str) -> Capability:
    """Create ``stored``; does the different spelling ``asked`` find it?"""
    try:
        fd = t.call(f"create({stored!r})", ctx.create, stored, show=lambda _fd: "ok")
    except OSError as err:
        return t.failed(err, f"creating a {what} name",
                        unsupported={errno.EILSEQ, errno.EINVAL})
    found = _lookup(ctx, asked)
    t.note(f"lstat({asked!r}) -> " + ("found" if found else describe_errno(errno.ENOENT)))
    # The probe's own directory holds nothing else, so the listing is the
    # name exactly as the filesystem stored it.
    listed = ctx.listdir()
    t.note(f"readdir -> {listed!r}")
    if found is None:
        if stored not in listed:
            return t.unsupported(f"the name was stored under another spelling: {listed!r}")
        return t.supported()
    own = os.fstat(fd)
    if (found.st_dev, found.st_ino) == (own.st_dev, own.st_ino):
        return t.unsupported(f"{folding}: {asked!r} opens the file created as {stored!r}")
    return t.could_not_tell(f"{asked!r} exists but is another file (something else is here)")


def case_sensitive(ctx: ProbeContext, t: Trial) -> Capability:
    return _spelling_test(ctx, t, f"CowProbe-Case-{ctx.token}", f"cowprobe-case-{ctx.token}",
                          what="mixed-case", folding="case-insensitive")


def normalization_sensitive(ctx: ProbeContext, t: Trial) -> Capability:
    # U+00E9 (NFC) versus "e" + U+0301 (NFD): byte-different names that a
    # normalizing filesystem (APFS-style, ext4/F2FS casefold) treats as one.
    return _spelling_test(ctx, t, f"cowprobe-\u00e9-{ctx.token}",
                          f"cowprobe-e\u0301-{ctx.token}", what="non-ASCII",
                          folding="normalizing")


_NAME_CAP = 4096  # no Linux filesystem goes near this; bounds the search


def max_name_length(ctx: ProbeContext, t: Trial) -> Capability:
    try:
        claim: int | None = os.fpathconf(ctx.dir_fd, "PC_NAME_MAX")
    except (OSError, ValueError):
        claim = None
    t.note(f"fpathconf(PC_NAME_MAX) -> {claim}")
    prefix = f"n{ctx.token}-"
    tries: list[str] = []

    def fits(n: int) -> bool:
        name = (prefix + "x" * n)[:n]
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=ctx.dir_fd)
        except OSError as err:
            if err.errno == errno.ENAMETOOLONG:
                tries.append(f"{n}: ENAMETOOLONG")
                return False
            raise
        os.close(fd)
        os.unlink(name, dir_fd=ctx.dir_fd)
        tries.append(f"{n}: ok")
        return True

    start = min(claim, _NAME_CAP) if claim and claim > len(prefix) else 255
    try:
        if fits(start):
            # pathconf may understate: try one more, and if that also fits,
            # double until it does not.
            lo, hi = start, start + 1
            while hi <= _NAME_CAP and fits(hi):
                lo, hi = hi, min(hi * 2, _NAME_CAP + 1)
            hi = min(hi, _NAME_CAP + 1)
        else:
            lo, hi = len(prefix), start
            if not fits(lo):
                return t.unsupported(f"even a {lo}-byte name is refused")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
    except OSError as err:
        t.note("create tries: " + ", ".join(tries))
        return t.failed(err, "creating a long name", unsupported=())
    t.note("create tries: " + ", ".join(tries))
    if claim is not None and claim != lo:
        return t.supported(f"pathconf claims {claim}, but the real limit is {lo} bytes", value=lo)
    return t.supported(value=lo)


PROBES = (
    ProbeSpec("case_sensitive", "case-sensitive", _GROUP, case_sensitive,
              ("case", "case_sensitivity")),
    ProbeSpec("normalization_sensitive", "Unicode byte-exact",
              _GROUP, normalization_sensitive, ("unicode", "normalization")),
    ProbeSpec("max_name_length", "max name length", _GROUP, max_name_length,
              ("name_max", "max_name")),
)
