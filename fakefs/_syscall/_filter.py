"""The seccomp BPF program: which calls reach the supervisor.

Only the calls a rule names are trapped (for ``ioctl``: only the named
request codes), so every other syscall of the filtered program runs in the
kernel without a round trip. Everything not trapped answers
``SECCOMP_RET_ALLOW``, including calls of a foreign architecture (an i386
binary on x86-64 escapes the faults rather than being killed: a fault
injector must never break what it does not target).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import NamedTuple

from .._rules import FaultRule, RuleError, parse_rule

__all__ = ["ARCH", "IOCTL_OPS", "Arch", "arch", "build_program", "parse_syscall_rules",
           "supported_ops"]

# linux/seccomp.h
RET_ALLOW = 0x7FFF0000
RET_USER_NOTIF = 0x7FC00000

# linux/filter.h / bpf_common.h opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }
_OFF_NR = 0
_OFF_ARCH = 4
#: low 32 bits of args[1] (little-endian on both supported architectures).
#: The kernel's ioctl takes ``unsigned int cmd``, so the high half is
#: ignored by the kernel as well: matching the low half alone is exact.
_OFF_ARG1_LO = 16 + 8 * 1

#: ioctl request codes (linux/fs.h), the same on x86-64 and aarch64
IOCTL_OPS: dict[str, int] = {
    "FICLONE": 0x40049409,  # _IOW(0x94, 9, int)
    "FICLONERANGE": 0x4020940D,  # _IOW(0x94, 13, struct file_clone_range)
    "FIDEDUPERANGE": 0xC0189436,  # _IOWR(0x94, 54, struct file_dedupe_range)
}


class Arch(NamedTuple):
    name: str
    audit: int  # AUDIT_ARCH_* (linux/audit.h)
    #: system call numbers (arch/x86/entry/syscalls/syscall_64.tbl,
    #: include/uapi/asm-generic/unistd.h for aarch64)
    nr: dict[str, int]


_X86_64 = Arch("x86_64", 0xC000003E, {
    "seccomp": 317, "ioctl": 16, "copy_file_range": 326, "fallocate": 285, "fsync": 74,
    "fdatasync": 75, "ftruncate": 77, "rename": 82, "renameat": 264, "renameat2": 316,
    "link": 86, "linkat": 265, "open": 2, "creat": 85, "openat": 257, "openat2": 437,
})  # fmt: skip
# aarch64 has no rename/link/open/creat (only the *at2/*at forms in the
# generic table): libc maps rename() to renameat(AT_FDCWD, ...) and open()
# to openat(AT_FDCWD, ...) there.
_AARCH64 = Arch("aarch64", 0xC00000B7, {
    "seccomp": 277, "ioctl": 29, "copy_file_range": 285, "fallocate": 47, "fsync": 82,
    "fdatasync": 83, "ftruncate": 46, "renameat": 38, "renameat2": 276, "linkat": 37,
    "openat": 56, "openat2": 437,
})  # fmt: skip

_ARCHES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}


def arch() -> Arch | None:
    """This machine's architecture, or None where the layer cannot run."""
    return _ARCHES.get(os.uname().machine.lower())


ARCH = arch()


def supported_ops(a: Arch | None = ARCH) -> frozenset[str]:
    if a is None:
        return frozenset()
    calls = set(a.nr) - {"seccomp", "ioctl"}
    return frozenset(calls | set(IOCTL_OPS))


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    # struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }
    return struct.pack("=HBBI", code, jt, jf, k)


def build_program(ops: Iterable[str], a: Arch) -> bytes:
    """The filter for ``ops`` as packed ``struct sock_filter`` instructions.

    Layout: check arch; load nr; one JEQ per trapped syscall (jumping to
    NOTIFY), a JEQ for ioctl into the request-code block; ALLOW. Jump
    offsets are 8-bit, which bounds the program far above the dozen calls
    known here.
    """
    wanted = set(ops)
    unknown = wanted - supported_ops(a)
    if unknown:
        raise ValueError(f"not trappable on {a.name}: {', '.join(sorted(unknown))}")
    calls = sorted(wanted - set(IOCTL_OPS), key=lambda c: a.nr[c])
    codes = sorted(IOCTL_OPS[c] for c in wanted & set(IOCTL_OPS))

    # Built back to front so each jump knows the distance to its target.
    tail: list[bytes] = []
    # [ioctl block] ld arg1; jeq code -> notify ...; allow; [notify]
    notify = [_insn(_RET_K, 0, 0, RET_USER_NOTIF)]
    allow = [_insn(_RET_K, 0, 0, RET_ALLOW)]
    ioctl_block: list[bytes] = []
    if codes:
        ioctl_block.append(_insn(_LD_W_ABS, 0, 0, _OFF_ARG1_LO))
        for i, code in enumerate(codes):
            # distance to notify: the remaining JEQs plus the allow
            ioctl_block.append(_insn(_JEQ_K, len(codes) - i, 0, code))
        ioctl_block += allow
    tail = ioctl_block + notify
    # body: ld nr; jeq ioctl -> ioctl_block; jeq call -> notify ...; allow
    body: list[bytes] = []
    n_calls = len(calls)
    if codes:
        # skip the call JEQs and the allow to land on the ioctl block
        body.append(_insn(_JEQ_K, n_calls + 1, 0, a.nr["ioctl"]))
    for i, call in enumerate(calls):
        to_notify = (n_calls - 1 - i) + 1 + len(ioctl_block)
        body.append(_insn(_JEQ_K, to_notify, 0, a.nr[call]))
    body += allow
    head = [
        _insn(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _insn(_JEQ_K, 1, 0, a.audit),
        _insn(_RET_K, 0, 0, RET_ALLOW),
        _insn(_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    prog = head + body + tail
    if len(prog) > 255:
        raise ValueError("too many trapped calls for 8-bit BPF jumps")
    return b"".join(prog)


def parse_syscall_rules(rules: Iterable[str | FaultRule]) -> list[FaultRule]:
    """Parse ``rules``; every one must be a syscall rule (RuleError otherwise)."""
    parsed = [r if isinstance(r, FaultRule) else parse_rule(r, layer="syscall") for r in rules]
    for rule in parsed:
        if not rule.syscall:
            raise RuleError(f"{rule.text!r} is a FUSE rule; without a mount only syscall "
                            "rules apply")
        missing = rule.ops - supported_ops()
        if missing:
            raise RuleError(f"{', '.join(sorted(missing))} cannot be trapped on this "
                            f"architecture ({os.uname().machine}), rule {rule.text!r}")
    return parsed
