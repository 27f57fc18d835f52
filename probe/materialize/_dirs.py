"""Destination directories for a batch: opened once, created staged, published.

Every destination file is created relative to an open directory descriptor,
so a batch resolves each destination directory's path once, not once per
file, and a parent swapped for a symlink mid-batch cannot redirect a write.

Missing directories are *staged*: the topmost missing one is made under a
hidden temporary name (``probe._tempname.temp_name``) and everything below it
with final names. Nothing under a staged directory is reachable by its final
path until ``_publish`` renames the staged root into place, which is what
lets files in it be created directly under their final names -- no per-file
temporary and rename -- while still never showing a torn file under a final
path. A fresh worktree therefore appears whole, in one rename, at the end.
Every directory is made 0700, so nobody else can look into it while it is
filled; ``_publish`` gives it its mode when the batch is done with it.

Worktrees are a boundary. Below a worktree root the batch was given, a
directory is opened one component at a time, each relative to its parent's
descriptor with O_NOFOLLOW: a symlink planted where a directory should be
(``wt/lib -> /elsewhere``, the classic extraction attack) fails the jobs
below it instead of sending their files out of the worktree. The root itself
is the caller's path and is resolved as given.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Mapping, Sequence
from operator import itemgetter

from .._fd import DIR_FLAGS, open_dir_nofollow, remove_tree
from .._tempname import reap_dead, temp_name

__all__ = [
    "DestDir", "DirCache", "beneath", "dir_key", "refuse_aliases", "refuse_read_writes",
    "worktree_roots",
]

_DIR_FLAGS = DIR_FLAGS
_ACL_DEFAULT = "system.posix_acl_default"
#: what a directory is made with: the owner's alone until it is filled
_PRIVATE = 0o700


class DestDir:
    # A slotted class, not a dataclass: importing dataclasses would cost
    # every materialize run ~12 ms. Equality and hash stay object identity:
    # a DestDir is one open directory, kept in sets and as a dict key.
    __slots__ = ("acl_limit", "created", "debris", "dev", "fd", "fresh", "has_default_acl",
                 "made", "made_in", "missing", "path", "root", "src_mode", "stage")

    def __init__(self, path: str, fd: int, dev: int, fresh: bool, has_default_acl: bool) -> None:
        self.path = path
        self.fd = fd
        self.dev = dev
        #: created by this batch (below a staged root): files go in under their
        #: final names, because the final path does not resolve yet
        self.fresh = fresh
        #: a default ACL decides new files' modes instead of the umask, so the
        #: mode given to open() cannot be trusted and needs an fchmod
        self.has_default_acl = has_default_acl
        #: the bits of 0777 that its default ACL lets mkdir keep in it, None
        #: without one (then the umask decides)
        self.acl_limit: int | None = None
        #: st_mode & 0o7777 when opened (for one this batch made: as made)
        self.made = 0
        #: for a directory this batch made as the mirror of a source
        #: directory: that one's st_mode, from which _publish takes its mode
        self.src_mode: int | None = None
        #: for a staged root: (parent DestDir, temporary name, final name)
        self.stage: tuple[DestDir, str, str] | None = None
        #: for a directory made below a staged root: its parent and name
        self.made_in: tuple[DestDir, str] | None = None
        #: the staged root this directory lives under (itself, for a root)
        self.root: DestDir | None = None
        #: directories made under this staged root, in creation order
        self.created: list[DestDir] = []
        #: for a staged root: the error that said the directory was missing (a
        #: FUSE daemon can say ENOENT for a directory that exists)
        self.missing: OSError | None = None
        #: in a fresh directory: final names of failed jobs' files that could
        #: not be unlinked when the job failed; the publish must not show them
        self.debris: list[str] = []


def worktree_roots(worktrees: Sequence[str]) -> list[str]:
    """The worktree roots as ``beneath`` takes them: no trailing slash,
    longest first (a root nested in another is found first)."""
    return sorted({w.rstrip("/") or "/" for w in worktrees}, key=len, reverse=True)


def beneath(path: str, roots: Sequence[str]) -> tuple[str, list[str]] | None:
    """(worktree root, components below it) for ``path``, or None if it is
    under none of ``roots`` (the longest root wins: worktrees may nest).
    Raises ValueError for a ".." below a root: lexically it could point
    anywhere, and the walk follows nothing to find out."""
    for root in roots:
        if path == root:
            return root, []
        prefix = root if root.endswith("/") else root + "/"
        if path.startswith(prefix):
            parts = [c for c in path[len(prefix):].split("/") if c and c != "."]
            if ".." in parts:
                raise ValueError(f"{path!r} climbs out of the worktree {root!r} ('..')")
            return root, parts
    return None


class DirCache:
    """The batch's destination directories, keyed by the path as given.

    ``worktrees``: the roots below which nothing is followed (see the module
    docstring); dest directories elsewhere are opened by their path.
    """

    def __init__(self, worktrees: Sequence[str] = ()) -> None:
        self._dirs: dict[str, DestDir] = {}
        self._errors: dict[str, OSError] = {}
        self._roots: list[DestDir] = []
        self._lock = threading.Lock()
        self._worktrees = worktree_roots(worktrees)

    @property
    def roots(self) -> list[DestDir]:
        """The staged roots, in creation order."""
        return list(self._roots)

    def existing(self) -> list[DestDir]:
        """The directories that were there before the batch (not staged)."""
        return [d for d in {id(d): d for d in self._dirs.values()}.values() if not d.fresh]

    def get(self, path: str) -> DestDir:
        """The open directory ``path``, creating (staged) what is missing.

        Raises the OSError that stopped it; the same error again for every
        later file in that directory, without retrying the syscalls.
        """
        d = self._dirs.get(path)
        if d is not None:
            return d
        with self._lock:
            return self._get_locked(path)

    def lookup(self, path: str) -> DestDir | None:
        """The directory if this batch already opened it; never creates."""
        return self._dirs.get(path)

    def _get_locked(self, path: str) -> DestDir:
        d = self._dirs.get(path)
        if d is not None:
            return d
        err = self._errors.get(path)
        if err is not None:
            raise err
        try:
            d = self._open_or_create(path)
        except OSError as exc:
            if exc.filename is None or exc.filename == os.path.basename(path):
                exc.filename = path
            self._errors[path] = exc
            raise
        self._dirs[path] = d
        return d

    def _open_or_create(self, path: str) -> DestDir:
        try:
            where = beneath(path, self._worktrees)
        except ValueError as err:
            raise OSError(errno.EXDEV, str(err), path) from None
        if where is not None and where[1]:
            root, parts = where
            # The canonical spelling for the parent, so "wt//a/b" and
            # "wt/a/b" share the walk (and its cached descriptors).
            pdir = self._get_locked(os.path.join(root, *parts[:-1]))
            name = parts[-1]
            if pdir.fresh:
                return self._make_in(pdir, name, path, None)
            try:
                fd = open_dir_nofollow(name, pdir.fd)
            except FileNotFoundError as err:
                return self._make_in(pdir, name, path, err)
            return _describe(path, fd, fresh=False)
        try:
            fd = os.open(path, _DIR_FLAGS)
        except FileNotFoundError as err:
            missing: OSError = err
        else:
            return _describe(path, fd, fresh=False)
        parent, name = os.path.split(path.rstrip(os.sep) or os.sep)
        if not name or name in (".", ".."):
            raise FileNotFoundError(errno.ENOENT, "destination directory is missing", path)
        return self._make_in(self._get_locked(parent or "."), name, path, missing)

    def _make_in(self, pdir: DestDir, name: str, path: str, missing: OSError | None) -> DestDir:
        """Create the missing directory ``name`` in ``pdir``: directly when
        ``pdir`` is itself staged, else as a new staged root."""
        if pdir.fresh:
            assert pdir.root is not None
            os.mkdir(name, _PRIVATE, dir_fd=pdir.fd)
            d = _open_made(pdir.fd, name, path)
            d.root = pdir.root
            d.made_in = (pdir, name)
            pdir.root.created.append(d)
            return d
        # A batch SIGKILLed here earlier left its staged root behind (no
        # cleanup runs on SIGKILL): removed once its owner is provably dead.
        reap_dead(pdir.fd, remove_dir=remove_tree)
        tmp = temp_name(name)
        try:
            os.mkdir(tmp, _PRIVATE, dir_fd=pdir.fd)
            d = _open_made(pdir.fd, tmp, path)
        except OSError as err:
            # Name the directory the caller asked for, not our hidden
            # temporary (which means nothing to them, and is gone).
            if err.filename == tmp:
                err.filename = path
            raise
        d.stage = (pdir, tmp, name)
        d.root = d
        d.missing = missing
        self._roots.append(d)
        return d

    def close(self) -> None:
        for d in self._dirs.values():
            with contextlib.suppress(OSError):
                os.close(d.fd)
        self._dirs.clear()


def _describe(path: str, fd: int, *, fresh: bool) -> DestDir:
    limit = None
    try:
        st = os.fstat(fd)
        try:
            limit = _acl_limit(os.getxattr(fd, _ACL_DEFAULT))
        except OSError as err:
            # ENODATA: no default ACL; EOPNOTSUPP: no ACLs on this filesystem.
            # Anything else: cannot tell, so take the safe (fchmod) path.
            acl = err.errno not in (errno.ENODATA, errno.EOPNOTSUPP)
        else:
            acl = True
    except BaseException:
        os.close(fd)
        raise
    d = DestDir(path, fd, st.st_dev, fresh, acl)
    d.acl_limit = limit
    d.made = st.st_mode & 0o7777
    return d


def _acl_limit(acl: bytes) -> int:
    """What the default ACL ``acl`` (the xattr: a 4-byte header, then 8-byte
    tag, perm, id entries) leaves of 0777 in a directory mkdir makes below
    it, as the kernel's posix_acl_create_masq does: the owner's entry, the
    mask's (else the owning group's), and other's."""
    perms = {int.from_bytes(acl[i:i + 2], "little"): acl[i + 2] & 7
             for i in range(4, len(acl) - 7, 8)}
    return perms.get(1, 7) << 6 | perms.get(0x10, perms.get(4, 7)) << 3 | perms.get(0x20, 7)


def _open_made(parent_fd: int, name: str, path: str) -> DestDir:
    """Open and describe the directory this batch just made as ``name``;
    if that fails, remove it again (it is empty, and nothing else knows it)."""
    try:
        return _describe(path, os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd),
                         fresh=True)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=parent_fd)
        raise


def dir_key(parent: str) -> str:
    """``parent`` without empty and "." components: "a//b/", "a/./b" and
    "./a/b" are one directory, so one key for the directory cache (two
    DestDirs for one directory would each think they made it) and for the
    duplicate check (two jobs writing one file). ".." stays: through a
    symlink it is not the lexical parent."""
    parts = [c for c in parent.split("/") if c and c != "."]
    if parent.startswith("/"):
        return "/" + "/".join(parts)
    return "/".join(parts) or "."


#: where a directory spelling leads: (st_dev, st_ino) of its deepest existing
#: ancestor and the missing components below that
_Identity = tuple[int, int, str]


def _identity(key: str, memo: dict[str, _Identity | None]) -> _Identity | None:
    """Where the dir_key spelling ``key`` leads as the kernel resolves it
    (symlinks followed, ".." taken as the kernel takes it); None where that
    cannot be told (a stat refused, ".." below a missing directory)."""
    if key in memo:
        return memo[key]
    try:
        st = os.stat(key)
        found: _Identity | None = (st.st_dev, st.st_ino, "")
    except (FileNotFoundError, NotADirectoryError):
        head, sep, tail = key.rpartition("/")
        up = head or ("/" if sep else ".")
        above = None if tail in {"..", "."} or up == key else _identity(up, memo)
        found = None if above is None else (
            above[0], above[1], f"{above[2]}/{tail}" if above[2] else tail)
    except OSError:
        found = None
    memo[key] = found
    return found


def refuse_aliases(dests: Sequence[tuple[int, str, str, str]]) -> None:
    """Raise ValueError if two of ``dests`` (job, dest, parent, name) are one
    file reached through two spellings of one directory that dir_key cannot
    see as one: a symlinked directory (``wt/lib -> usr/lib``), "..", a second
    mount of one directory. Both jobs would report success while one
    overwrote the other. Only directories holding a name that another
    spelling holds too are looked at (one stat each): a batch with no such
    pair makes no filesystem call here."""
    # Runs once per job of a batch: C-level map/zip rather than a loop of
    # method calls (~3 ms instead of ~10 on 40,000 jobs).
    names = list(map(itemgetter(3), dests))
    parents = list(map(itemgetter(2), dests))
    last = dict(zip(names, parents, strict=True))  # name -> the last directory holding it
    # Both directories of every name held by two: the only ones worth a stat.
    shared = {d for n, p in zip(names, parents, strict=True) if last[n] != p
              for d in (p, last[n])}
    if not shared:
        return
    memo: dict[str, _Identity | None] = {}
    owner: dict[_Identity, str] = {}
    aliased: dict[str, _Identity] = {}
    for parent in sorted(shared):
        ident = _identity(parent, memo)
        if ident is None:
            continue
        other = owner.setdefault(ident, parent)
        if other != parent:
            aliased[parent] = aliased[other] = ident
    if not aliased:
        return
    seen: dict[tuple[_Identity, str], tuple[int, str]] = {}
    for job, dest, parent, name in sorted(d for d in dests if d[2] in aliased):
        prev = seen.setdefault((aliased[parent], name), (job, dest))
        if prev[0] != job:
            raise ValueError(f"job {job}: destination {dest!r} is the file job {prev[0]} writes "
                             f"as {prev[1]!r} (one directory by two paths)")


def refuse_read_writes(
    sources: Mapping[str, Sequence[tuple[int, str, str, str]]], written: Mapping[str, int]
) -> None:
    """Raise ValueError if a batch writes a file it also reads: ``sources``
    maps each source to its dests (job, dest, parent, name), ``written`` each
    dest's key (its dir_key parent joined to its name, as ``_batch._plan``
    builds it) to the job writing it.

    ``(a, ./a)`` would replace ``a`` with a clone of itself and report it
    cloned (GNU cp refuses: "are the same file"); ``(a, b), (c, a)`` lets
    job 0 read ``a`` before or after job 1 replaced it, whichever thread
    gets there first. Spellings only (one key per source, no filesystem
    call): the same file reached through a symlink or "..", or a hard link
    of the source as the dest (replaced on purpose: see
    ``probe.clone_or_copy``), is not refused."""
    # Once per source: C-level where it can be. A source spelled tidily
    # (no "//", no "." component) is its own key, so one set intersection
    # finds those; only the others are tidied one by one.
    hits = [(written[s], s) for s in written.keys() & sources.keys()]
    if "//" in (blob := "\0".join(sources)) or "./" in blob:
        for src in sources:
            if "//" in src or "./" in src:
                parent, sep, name = src.rpartition("/")
                canon = dir_key(parent if parent else ("/" if sep else "."))
                key = name if canon == "." else canon.rstrip("/") + "/" + name
                if key in written:
                    hits.append((written[key], src))
    if not hits:
        return
    writer, src = min(hits)
    dests = sources[src]
    mine = next((d for d in dests if d[0] == writer), None)
    if mine is not None:
        raise ValueError(f"job {writer}: source {src!r} and destination {mine[1]!r} "
                         "are the same file")
    raise ValueError(f"job {writer}: destination is the source {src!r} that job "
                     f"{dests[0][0]} reads (it would change under that job's clone)")
