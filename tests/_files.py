"""Small file helpers shared by the tests (plain functions, not fixtures)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def write_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Create ``path`` exclusively with ``data`` and exactly ``mode`` (fchmod,
    so the umask cannot change what a test means by the mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def tree(src: Path, dirs: int, per_dir: int, size: int = 64) -> None:
    """``dirs`` directories d00.. of ``per_dir`` files f0000.. each, every
    file's bytes its own (directory and index), so a mix-up shows."""
    for d in range(dirs):
        sub = src / f"d{d:02d}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            write_file(sub / f"f{i:04d}", bytes([d, i % 256]) * (size // 2))


def open_fds() -> int:
    """Descriptors this process holds now: a leak check before/after a call."""
    return len(os.listdir("/proc/self/fd"))


def staged_files(parent: Path, final: str) -> int:
    """Files seen so far in ``parent``'s staging directory for the worktree
    ``final`` (the materializer's ``.FINAL.cowprobe-*.tmp``): how far an
    interrupted batch got, observed instead of slept for."""
    for entry in os.scandir(parent):
        if entry.name.startswith(f".{final}.cowprobe-") and entry.is_dir(follow_symlinks=False):
            try:
                return sum(len(os.listdir(os.path.join(entry.path, d)))
                           for d in os.listdir(entry.path))
            except FileNotFoundError:  # published or removed meanwhile
                return 0
    return 0


@contextlib.contextmanager
def world_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory every user can traverse, removed afterwards. Not
    under pytest's tmp_path: nobody cannot traverse /tmp/pytest-of-root."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


#: run a command as nobody (uid/gid 65534, no supplementary groups)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def importable_copy(base: Path, packages: tuple[str, ...] = ("probe",)) -> Path:
    """``base/lib`` holding a copy of ``packages`` every user can import.

    A process run as nobody cannot import the checkout itself when it sits
    in a root-only directory, as CI's fresh clone does: run it with
    ``python -I -B`` and this directory first on ``sys.path``."""
    import importlib

    lib = base / "lib"
    for name in packages:
        shutil.copytree(Path(importlib.import_module(name).__file__ or "").parent, lib / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for top, _dirs, files in os.walk(lib):
        Path(top).chmod(0o755)
        for f in files:
            Path(top, f).chmod(0o644)
    return lib


def as_nobody(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a forked child as uid/gid 65534 with no groups; its
    result (pickled back), or an AssertionError carrying the child's."""
    import pickle

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                out: object = ("ok", fn(*args))
            except BaseException as err:
                out = ("raised", repr(err))
            with os.fdopen(wfd, "wb") as f:
                pickle.dump(out, f)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child as nobody died"
    kind, value = pickle.loads(data)  # noqa: S301 - our own child
    assert kind == "ok", value
    return value  # type: ignore[no-any-return]
