"""The fault-rule language: ``OPS:GLOB:ACTION[:TRIGGER]...``.

Parsing and validation only -- no FUSE, no I/O -- so the CLI and the Python
handle can reject a bad rule before any mount exists.

* OPS: comma-separated FUSE operation names (``open,create``) or ``*``.
* GLOB: a path relative to the mount root, matched with ``fnmatch`` rules
  (``*`` also crosses ``/``; ``.`` is the root itself).
* ACTION: an errno name (``EIO``), ``vanish`` (after the first matching
  operation succeeds the entry is removed from the backing directory, as
  its caller could remove it -- files, symlinks, fifos; never the mount
  root, never a directory),
  ``vanish-tree`` (the same, and a directory goes with everything in it),
  ``delay=50ms`` or ``short=N`` (a read/write transfers at most N bytes).
* TRIGGER: ``times=N``, ``nth=N``, ``p=0.1``, ``seed=7``, ``pid=1234``, and
  ``delay=...`` once more to stall before failing.
"""

from __future__ import annotations

import errno
import fnmatch
import re
from typing import NamedTuple

__all__ = [
    "OPEN_OPS",
    "OPS",
    "SYSCALL_OPS",
    "FaultRule",
    "RuleError",
    "parse_rule",
    "refusal",
]


class RuleError(ValueError):
    """A fault rule that cannot be armed; the message is one line."""


#: Operations the kernel forwards to a pyfuse3 daemon and fakefs can fail.
#: ``access`` is absent on purpose: fakefs mounts with ``default_permissions``,
#: so the kernel checks permissions itself and never sends FUSE_ACCESS.
OPS: frozenset[str] = frozenset(
    {
        "lookup", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink",
        "rmdir", "symlink", "rename", "link", "open", "read", "write", "flush",
        "release", "fsync", "opendir", "readdir", "releasedir", "fsyncdir",
        "statfs", "setxattr", "getxattr", "listxattr", "removexattr", "create",
    }
)  # fmt: skip

#: What ``*`` in OPS means: every operation whose errno reaches a caller.
ALL_OPS: frozenset[str] = OPS - {"release", "releasedir"}

#: Calls the syscall layer (fakefs._syscall, seccomp user notification)
#: can fail on a real filesystem. Upper case names are ioctl requests, the
#: rest system calls. The FUSE refusal table does not apply to them: the
#: errno goes straight back to the caller's syscall, no kernel FUSE code
#: reinterprets it.
SYSCALL_OPS: frozenset[str] = frozenset(
    {
        "FICLONE", "FICLONERANGE", "FIDEDUPERANGE", "copy_file_range", "fallocate",
        "fsync", "fdatasync", "ftruncate", "rename", "renameat", "renameat2", "link",
        "linkat", "open", "creat", "openat", "openat2",
    }
)  # fmt: skip
#: The open family: trapped only where a rule names one (see
#: fakefs._syscall._inprocess: a program opens files far more often than it
#: clones them, and every trapped call costs a round trip).
OPEN_OPS: frozenset[str] = frozenset({"open", "creat", "openat", "openat2"})
#: Names that are both a FUSE operation and a system call. In a rule they
#: mean the FUSE operation unless the rule is parsed for the syscall layer
#: (``syscall_faults()``, ``fakefs run`` without a mount) or the op is
#: written ``sys.fsync``: existing FUSE rules keep their meaning.
AMBIGUOUS_OPS: frozenset[str] = SYSCALL_OPS & OPS
SYS_PREFIX = "sys."
#: Syscall ops with a second path (``src=`` matches it): the clone/copy
#: source, or the old name of a rename/link.
SOURCE_OPS: frozenset[str] = frozenset(
    {"FICLONE", "FICLONERANGE", "FIDEDUPERANGE", "copy_file_range", "rename", "renameat",
     "renameat2", "link", "linkat"}
)  # fmt: skip

_ENOSYS_CACHED = {
    # fs/fuse/file.c fuse_file_open(): -ENOSYS sets fc->no_open, the open
    # *succeeds* with fh 0, and no later open of any file reaches the daemon.
    "open": "the kernel takes it as 'open not implemented': this open succeeds "
    "and no later open reaches fakefs for the life of the mount (fc->no_open)",
    "opendir": "the kernel takes it as 'opendir not implemented': this opendir "
    "succeeds and no later one reaches fakefs (fc->no_opendir)",
    # fs/fuse/dir.c fuse_atomic_open(): -ENOSYS sets fc->no_create and falls
    # back to MKNOD + OPEN for every later O_CREAT open.
    "create": "the kernel takes it as 'create not implemented' and switches the "
    "whole mount to mknod+open (fc->no_create)",
    # fs/fuse/file.c fuse_flush(): -ENOSYS sets fc->no_flush and returns 0.
    "flush": "the kernel turns it into success and never sends FLUSH again "
    "(fc->no_flush)",
    # fs/fuse/file.c fuse_fsync_common(): -ENOSYS sets fc->no_fsync(dir), 0.
    "fsync": "the kernel turns it into success and never sends FSYNC again "
    "(fc->no_fsync)",
    "fsyncdir": "the kernel turns it into success and never sends FSYNCDIR again "
    "(fc->no_fsyncdir)",
    # fs/fuse/xattr.c: -ENOSYS sets fc->no_<op>xattr and becomes EOPNOTSUPP
    # for this and every later call on the mount.
    "getxattr": "the kernel turns it into EOPNOTSUPP for every later getxattr on "
    "the mount (fc->no_getxattr)",
    "setxattr": "the kernel turns it into EOPNOTSUPP for every later setxattr on "
    "the mount (fc->no_setxattr)",
    "listxattr": "the kernel turns it into EOPNOTSUPP for every later listxattr "
    "on the mount (fc->no_listxattr)",
    "removexattr": "the kernel turns it into EOPNOTSUPP for every later "
    "removexattr on the mount (fc->no_removexattr)",
    # fs/fuse/dir.c fuse_rename2(): on RENAME2 (rename with flags) -ENOSYS
    # sets fc->no_rename2 and every later renameat2 with flags gets EINVAL.
    "rename": "on a rename with flags the kernel turns it into EINVAL for every "
    "later renameat2 with flags (fc->no_rename2)",
}

_EINTR_DENTRY = (
    "the kernel reads it as 'request interrupted, outcome unknown' and drops the "
    "dentries (fuse_unlink/rmdir/rename/link), and callers retry EINTR "
    "(SA_RESTART, PEP 475), so the fault never surfaces"
)


def refusal(op: str, errno_name: str) -> str | None:
    """Why ``errno_name`` may not be returned from ``op``, or None if it may.

    The errnos below mean something else to the kernel (or to every caller)
    when a FUSE daemon returns them; passing them through would not inject
    a failure but change the mount's behaviour or kill it.
    """
    if op in {"release", "releasedir"}:
        # fs/fuse/file.c fuse_file_put(): RELEASE is sent after close() has
        # already returned and its reply error is ignored.
        return "the kernel sends RELEASE after close() returned and ignores its error"
    if errno_name == "ENOSYS":
        reason = _ENOSYS_CACHED.get(op)
        if reason is None:
            reason = (
                "it is the FUSE protocol's 'operation not implemented' reply, "
                "and callers read ENOSYS as 'no such system call'"
            )
        return reason
    if errno_name == "EINTR":
        if op == "open":
            # Reported on this machine: EINTR from OPEN took the whole
            # connection down (ECONNABORTED, then ENOTCONN everywhere). On
            # 6.18 we saw cat get EINTR while Python's open() retried it
            # forever (PEP 475): either way no caller sees a clean failure.
            return (
                "returned from open it has taken the whole FUSE connection down "
                "(ECONNABORTED, then ENOTCONN), and callers retry it forever (PEP 475)"
            )
        if op in {"unlink", "rmdir", "rename", "link"}:
            return _EINTR_DENTRY
        return (
            "it is the kernel's own 'interrupted by a signal' answer and callers "
            "retry it (SA_RESTART, PEP 475), so the fault never surfaces"
        )
    if errno_name in {"ENOTCONN", "ECONNABORTED"}:
        # fs/fuse/dev.c: once fc->connected is 0 every request fails with
        # -ENOTCONN and requests in flight at the abort with -ECONNABORTED.
        return (
            "it is how the kernel reports a dead FUSE daemon (fc->connected == 0); "
            "tools and fakefs's own teardown would take the mount for a stale one"
        )
    return None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)?$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}


def _duration(text: str, rule: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise RuleError(f"bad delay {text!r} in rule {rule!r} (use e.g. 50ms, 2s, 300us)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _int(key: str, text: str, rule: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RuleError(f"{key}= needs an integer in rule {rule!r}, got {text!r}") from None
    if value < minimum:
        raise RuleError(f"{key}= must be >= {minimum} in rule {rule!r}, got {value}")
    return value


def errno_number(name: str) -> int | None:
    value = getattr(errno, name, None)
    if not name.startswith("E") or not isinstance(value, int):
        return None
    return value


class FaultRule(NamedTuple):
    """One parsed rule. ``text`` is its canonical string form.

    A NamedTuple rather than a frozen dataclass: the same immutable value,
    and ``fakefs run`` does not pay the import of dataclasses (and inspect,
    ~20 ms) on every start."""

    ops: frozenset[str]
    glob: str
    errno: int | None = None  # the errno to fail with, if any
    errno_name: str | None = None
    vanish: bool = False
    tree: bool = False  # vanish-tree: a directory may vanish too, with its contents
    delay: float = 0.0  # seconds to stall before acting
    short: int | None = None  # cap on bytes transferred by read/write
    times: int | None = None
    nth: int | None = None
    p: float | None = None
    seed: int | None = None
    pid: int | None = None
    #: syscall rules only: a glob the call's source (or old name) must match
    src: str | None = None
    #: "fuse" or "syscall": which layer answers the rule
    layer: str = "fuse"

    @property
    def syscall(self) -> bool:
        """Does this rule act at the syscall layer (not on the FUSE mount)?"""
        return self.layer == "syscall"

    @property
    def text(self) -> str:
        ops = "*" if self.ops == ALL_OPS else ",".join(sorted(self.ops))
        if self.syscall and self.ops & AMBIGUOUS_OPS:
            ops = ",".join(SYS_PREFIX + op if op in OPS else op for op in sorted(self.ops))
        parts = [ops, self.glob]
        if self.errno_name is not None:
            parts.append(self.errno_name)
            if self.delay:
                parts.append(f"delay={_fmt_delay(self.delay)}")
        elif self.vanish:
            parts.append("vanish-tree" if self.tree else "vanish")
        elif self.short is not None:
            parts.append(f"short={self.short}")
            if self.delay:
                parts.append(f"delay={_fmt_delay(self.delay)}")
        else:
            parts.append(f"delay={_fmt_delay(self.delay)}")
        for key in ("times", "nth", "p", "seed", "pid", "src"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value}")
        return ":".join(parts)

    def matches_path(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.glob)

    def __str__(self) -> str:
        return self.text


def compile_glob(glob: str) -> re.Pattern[str]:
    """A rule glob compiled once, for matchers on a hot path: the same
    answers as ``FaultRule.matches_path`` (fnmatch's own translation)."""
    return re.compile(fnmatch.translate(glob))


def _fmt_delay(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:g}ms"


def parse_rule(text: str, *, layer: str | None = None) -> FaultRule:
    """Parse ``OPS:GLOB:ACTION[:TRIGGER]...``; raises RuleError (one line).

    ``layer="syscall"`` reads every op as a system call (fsync, rename and
    link are then the calls, not the FUSE operations) and refuses FUSE-only
    ones; None decides from the names.
    """
    if not isinstance(text, str):
        raise RuleError(f"a fault rule is a string, got {type(text).__name__}")
    rule = text.strip()
    fields = rule.split(":")
    if len(fields) < 3 or not all(fields[:3]):
        raise RuleError(f"malformed rule {rule!r}: expected OPS:GLOB:ACTION[:TRIGGER]...")
    ops_text, glob, action, *triggers = fields
    ops, syscall = _parse_ops(ops_text, rule, layer)
    if glob.startswith("/"):
        raise RuleError(f"glob {glob!r} in rule {rule!r} must be relative to the mount root")
    if "\x00" in glob:
        raise RuleError(f"glob in rule {rule!r} contains a NUL byte")

    kw: dict[str, object] = {}
    if syscall and (action in {"vanish", "vanish-tree"} or action.startswith("short=")):
        raise RuleError(
            f"{action.partition('=')[0]} is a FUSE action; a syscall rule takes an errno "
            f"or delay=, rule {rule!r}"
        )
    if action in {"vanish", "vanish-tree"}:
        kw["vanish"] = True
        kw["tree"] = action == "vanish-tree"
    elif action.startswith("delay="):
        kw["delay"] = _duration(action[len("delay="):], rule)
    elif action.startswith("short="):
        kw["short"] = _int("short", action[len("short="):], rule, 1)
        if ops - {"read", "write"}:
            raise RuleError(f"short= applies to read and write only, rule {rule!r}")
    else:
        number = errno_number(action)
        if number is None:
            raise RuleError(
                f"unknown action {action!r} in rule {rule!r}: "
                "use an errno name (EIO), vanish, vanish-tree, delay=50ms or short=N"
            )
        for op in sorted(() if syscall else ops):
            why = refusal(op, action)
            if why is not None:
                raise RuleError(f"{action} is refused for {op}: {why}")
        kw["errno"] = number
        kw["errno_name"] = action

    for trig in triggers:
        key, sep, value = trig.partition("=")
        if not sep or not value:
            raise RuleError(f"malformed trigger {trig!r} in rule {rule!r}: expected KEY=VALUE")
        if key in kw:
            raise RuleError(f"trigger {key}= given twice in rule {rule!r}")
        if key in {"times", "nth"}:
            kw[key] = _int(key, value, rule, 1)
        elif key == "seed":
            kw[key] = _int(key, value, rule, 0)
        elif key == "pid":
            kw[key] = _int(key, value, rule, 1)
        elif key == "p":
            try:
                prob = float(value)
            except ValueError:
                raise RuleError(f"p= needs a number in rule {rule!r}, got {value!r}") from None
            if not 0.0 <= prob <= 1.0:
                raise RuleError(f"p= must be within 0..1 in rule {rule!r}, got {value}")
            kw[key] = prob
        elif key == "src":
            if not ops <= SOURCE_OPS:
                raise RuleError(
                    f"src= needs calls with a source ({', '.join(sorted(SOURCE_OPS))}), "
                    f"rule {rule!r}"
                )
            if value.startswith("/"):
                raise RuleError(f"src= glob {value!r} in rule {rule!r} must be relative")
            kw[key] = value
        elif key == "delay":
            if "delay" in kw or kw.get("vanish"):
                raise RuleError(f"delay= cannot be combined with this action in rule {rule!r}")
            kw[key] = _duration(value, rule)
        else:
            raise RuleError(
                f"unknown trigger {key!r} in rule {rule!r}: "
                "use times=, nth=, p=, seed=, pid=, src= or delay="
            )
    if "seed" in kw and "p" not in kw:
        raise RuleError(f"seed= only makes sense with p= in rule {rule!r}")
    if kw.get("vanish") and "times" in kw:
        raise RuleError(f"vanish fires once; times= is meaningless in rule {rule!r}")
    kw["layer"] = "syscall" if syscall else "fuse"
    return FaultRule(ops=ops, glob=glob, **kw)  # type: ignore[arg-type]


def _parse_ops(text: str, rule: str, layer: str | None) -> tuple[frozenset[str], bool]:
    """The ops, and whether they are syscalls."""
    if text == "*":
        if layer == "syscall":
            raise RuleError(f"name the calls in syscall rule {rule!r}: * means every FUSE op")
        return ALL_OPS, False
    raw = [op.strip() for op in text.split(",")]
    marked = any(op.startswith(SYS_PREFIX) for op in raw)
    ops = [op.removeprefix(SYS_PREFIX) for op in raw]
    syscall = layer == "syscall" or marked or any(op in SYSCALL_OPS - OPS for op in ops)
    if syscall:
        fuse_only = [op for op in ops if op not in SYSCALL_OPS]
        if fuse_only and layer != "syscall" and fuse_only != ops:
            # One layer per rule: a FUSE op and a syscall are answered by two
            # different processes, so one rule's counters could not be one count.
            raise RuleError(f"rule {rule!r} mixes FUSE operations and syscalls; write two rules")
        if fuse_only:
            raise RuleError(f"unknown syscall {fuse_only[0]!r} in rule {rule!r}: known: "
                            f"{', '.join(sorted(SYSCALL_OPS))}")
        return frozenset(ops), True
    for op in ops:
        if op not in OPS:
            hint = "access is never sent (default_permissions); " if op == "access" else ""
            raise RuleError(
                f"unknown operation {op!r} in rule {rule!r}: {hint}known: "
                f"{', '.join(sorted(OPS))}; syscalls: {', '.join(sorted(SYSCALL_OPS))}"
            )
    return frozenset(ops), False
