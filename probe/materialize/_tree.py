"""Mirroring a directory tree into worktrees: the walk that plans ``mirror``.

A tree has more than regular files. What happens to each kind of entry:

* regular file -> a materialize job per worktree (clone or copy);
* symlink      -> recreated as a symlink with the same target text (never
                  followed: a link to a directory is not copied as one, and a
                  dangling link stays dangling), atomically replacing what is
                  at its path;
* directory    -> mirrored, empty ones included;
* FIFO, socket, device -> not copied, reported as a failure. Nothing opens
                  them, so a FIFO with no writer cannot hang the mirror;
* a directory that cannot be listed -> not copied, reported as a failure
                  with the listing's errno; nothing is made for it (an empty
                  copy would look like a mirrored empty directory).

Files already in a worktree that the source does not have are left alone:
a mirror adds and replaces, it never deletes.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence

from .._platform import describe_mode
from ._worker import Dest

__all__ = ["MirrorPlan", "plan_mirror"]

_BY_NAME = operator.attrgetter("name")


class MirrorPlan:
    # A slotted class, not a dataclass: importing dataclasses would cost
    # every mirror ~12 ms.
    __slots__ = ("dirs", "jobs", "njobs", "specials", "symlinks", "unlisted")

    def __init__(self) -> None:
        #: the file jobs, already grouped by source as the batch wants them
        #: (``_batch.Plan``): built here, where every name comes from the
        #: directory itself, so none of ``_batch._plan``'s checks (a directory
        #: name, a dest given twice, a dest outside the worktrees) can fail --
        #: and 40,000 jobs skip a second pass that cost ~0.1 s
        self.jobs: list[tuple[str, list[Dest]]] = []
        #: how many dest files ``jobs`` holds
        self.njobs = 0
        #: (symlink in the source, its target text, dest path)
        self.symlinks: list[tuple[str, str, str]] = []
        #: (dest directory, its source directory's st_mode) for every
        #: directory the tree has: the empty ones are made from it, and the
        #: ones the batch creates get their source's permission bits
        self.dirs: list[tuple[str, int]] = []
        #: (source path, what it is) for special files, which are not copied
        self.specials: list[tuple[str, str]] = []
        #: (source directory, the error that refused its listing)
        self.unlisted: list[tuple[str, OSError]] = []


def plan_mirror(src_dir: str, dest_dirs: Sequence[str]) -> MirrorPlan:
    """Walk ``src_dir`` (without following symlinks) into a MirrorPlan.

    Each source file's jobs are adjacent, so the batch opens it once for all
    worktrees. Raises OSError if ``src_dir`` itself cannot be read; a
    subdirectory that cannot be is in ``unlisted``, and not in ``dirs``.
    """
    plan = MirrorPlan()
    stack = [""]
    while stack:
        rel = stack.pop()
        here = os.path.join(src_dir, rel) if rel else src_dir
        try:
            # Followed, as the scandir follows it: the mode of what is listed.
            dir_mode = os.stat(here).st_mode
            with os.scandir(here) as it:
                entries = sorted(it, key=_BY_NAME)
        except OSError as err:
            if not rel:
                raise
            plan.unlisted.append((here, err))
            continue
        # The dest directories, each with its separator: every file's dest
        # below is one concatenation (os.path.join per file per worktree was
        # a measurable part of a 10 000-file mirror).
        outs = [os.path.join(wt, rel) if rel else wt for wt in dest_dirs]
        plan.dirs.extend([(o, dir_mode) for o in outs])
        outs = [o + "/" if o and not o.endswith("/") else o for o in outs]
        # (dest directory with its separator, the directory cache's key for
        # it: the spelling _batch._plan would derive from each dest)
        routes = [(o, _parent_key(o)) for o in outs]
        subdirs = []
        add = plan.jobs.append
        job = plan.njobs
        for e in entries:
            name = e.name
            # Regular files first: nearly every entry is one. With
            # follow_symlinks=False the three tests are exclusive, so the
            # order changes nothing else.
            if e.is_file(follow_symlinks=False):
                dests = []
                for o, key in routes:
                    # tuple.__new__: Dest(...) is one more frame per dest.
                    dests.append(_new(Dest, (job, o + name, key, name)))
                    job += 1
                add((e.path, dests))
            elif e.is_dir(follow_symlinks=False):
                subdirs.append(os.path.join(rel, name) if rel else name)
            elif e.is_symlink():
                target = os.readlink(e.path)
                plan.symlinks.extend((e.path, target, o + name) for o in outs)
            else:
                mode = e.stat(follow_symlinks=False).st_mode
                plan.specials.append((e.path, describe_mode(mode)))
        plan.njobs = job
        stack.extend(reversed(subdirs))
    return plan


_new = tuple.__new__


def _parent_key(out: str) -> str:
    """The parent ``_batch._plan`` derives for ``out + name``."""
    parent, sep, _name = (out + "x").rpartition("/")
    if not parent:
        return "/" if sep else "."
    if parent[-1] == "/":
        return parent.rstrip("/") or "/"
    return parent
