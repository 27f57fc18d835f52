"""The rule language and the refusal table (no mount needed)."""

from __future__ import annotations

import errno

import pytest

import fakefs
from fakefs._rules import ALL_OPS, OPS, refusal

VALID = [
    ("open:blobs/*:EXDEV", "open:blobs/*:EXDEV"),
    ("open,create:*.tmp:EIO:times=2", "create,open:*.tmp:EIO:times=2"),
    ("read:big.bin:EIO:nth=3", "read:big.bin:EIO:nth=3"),
    ("write:*:ENOSPC:p=0.1:seed=7", "write:*:ENOSPC:p=0.1:seed=7"),
    ("lookup:blobs/a:vanish", "lookup:blobs/a:vanish"),
    ("read:*:delay=50ms", "read:*:delay=50ms"),
    ("read:*:short=1", "read:*:short=1"),
    ("open:*:EIO:pid=1234", "open:*:EIO:pid=1234"),
    ("open:x:EIO:delay=2s", "open:x:EIO:delay=2000ms"),
]


@pytest.mark.parametrize(("text", "canonical"), VALID)
def test_valid_rules_parse_and_round_trip(text: str, canonical: str) -> None:
    rule = fakefs.parse_rule(text)
    assert rule.text == canonical
    assert fakefs.parse_rule(rule.text) == rule


def test_parsed_fields() -> None:
    rule = fakefs.parse_rule("open,create:*.tmp:EIO:times=2")
    assert rule.ops == {"open", "create"}
    assert rule.errno == errno.EIO
    assert rule.times == 2
    assert fakefs.parse_rule("read:*:delay=50ms").delay == pytest.approx(0.05)
    assert fakefs.parse_rule("*:x:EIO").ops == ALL_OPS
    assert fakefs.parse_rule("lookup:a:vanish").vanish


BAD = [
    ("open:blobs", "malformed rule"),
    ("open::EIO", "malformed rule"),
    ("", "malformed rule"),
    ("opne:x:EIO", "unknown operation 'opne'"),
    ("access:x:EIO", "access is never sent"),
    ("open:x:EFOO", "unknown action 'EFOO'"),
    ("open:x:explode", "unknown action 'explode'"),
    ("open:/abs:EIO", "must be relative"),
    ("open:x:EIO:times=0", "times= must be >= 1"),
    ("open:x:EIO:nth=x", "nth= needs an integer"),
    ("open:x:EIO:p=2", "p= must be within 0..1"),
    ("open:x:EIO:seed=3", "seed= only makes sense with p="),
    ("open:x:EIO:color=red", "unknown trigger 'color'"),
    ("open:x:EIO:times", "malformed trigger"),
    ("open:x:EIO:times=1:times=2", "given twice"),
    ("open:x:short=4", "short= applies to read and write only"),
    ("read:x:delay=fast", "bad delay"),
    ("lookup:x:vanish:times=2", "vanish fires once"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_rules_raise_one_line(text: str, message: str) -> None:
    with pytest.raises(fakefs.RuleError) as info:
        fakefs.parse_rule(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


# Every (operation, errno) the kernel reinterprets at the FUSE boundary.
REFUSED = (
    [(op, "ENOSYS") for op in sorted(ALL_OPS)]
    + [(op, "EINTR") for op in sorted(ALL_OPS)]
    + [(op, "ENOTCONN") for op in sorted(ALL_OPS)]
    + [(op, "ECONNABORTED") for op in sorted(ALL_OPS)]
    + [(op, name) for op in ("release", "releasedir") for name in ("EIO", "ENOSPC")]
)


@pytest.mark.parametrize(("op", "name"), REFUSED)
def test_reinterpreted_errnos_are_refused_with_the_reason(op: str, name: str) -> None:
    with pytest.raises(fakefs.RuleError) as info:
        fakefs.parse_rule(f"{op}:some/file:{name}")
    message = str(info.value)
    reason = refusal(op, name)
    # The message carries the table's reason, not a generic refusal.
    assert reason and len(reason) > 20
    assert message == f"{name} is refused for {op}: {reason}"


@pytest.mark.parametrize(
    ("op", "why"),
    [
        ("open", "no later open reaches fakefs"),
        ("create", "mknod+open"),
        ("flush", "never sends FLUSH again"),
        ("fsync", "never sends FSYNC again"),
        ("getxattr", "EOPNOTSUPP for every later getxattr"),
        ("rename", "no_rename2"),
        ("opendir", "no_opendir"),
    ],
)
def test_enosys_reasons_name_the_cached_switch(op: str, why: str) -> None:
    reason = refusal(op, "ENOSYS")
    assert reason is not None and why in reason


def test_eintr_on_open_names_the_connection_abort() -> None:
    reason = refusal("open", "EINTR")
    assert reason is not None and "ECONNABORTED" in reason


def test_star_expands_but_still_refuses() -> None:
    with pytest.raises(fakefs.RuleError, match="ENOSYS is refused"):
        fakefs.parse_rule("*:x:ENOSYS")
    assert "release" not in fakefs.parse_rule("*:x:EIO").ops


@pytest.mark.parametrize("op", sorted(ALL_OPS))
def test_ordinary_errnos_are_allowed_everywhere(op: str) -> None:
    for name in ("EIO", "EXDEV", "EOPNOTSUPP", "EINVAL", "ENOENT", "ENOSPC", "EACCES"):
        assert fakefs.parse_rule(f"{op}:f:{name}").errno == getattr(errno, name)


def test_delay_allowed_on_release() -> None:
    # RELEASE has no caller to fail (close() returned long ago), so errnos
    # are refused on it; a delay is the one action that means something.
    assert "release" in OPS
    assert fakefs.parse_rule("release:f:delay=1ms").delay == pytest.approx(0.001)
    with pytest.raises(fakefs.RuleError):
        fakefs.parse_rule("release:f:EIO")


def test_client_side_imports_without_pyfuse3_or_trio() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['pyfuse3'] = None\n"  # any import of them now fails
        "sys.modules['trio'] = None\n"
        "import fakefs, fakefs.cli, fakefs._client, fakefs._mounts\n"
        "assert fakefs.parse_rule('open:blobs/*:EXDEV').errno == 18\n"
        "assert fakefs.cli.main(['fault', 'list', '/']) == 2\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert res.stdout.strip() == "ok", res.stderr
    assert "is not a fakefs mount" in res.stderr


def test_syscall_rules_parse_with_their_own_vocabulary() -> None:
    from fakefs import parse_rule

    r = parse_rule("FICLONE,copy_file_range:wt/*:ENOSYS:src=blobs/*:times=2")
    assert r.syscall and r.src == "blobs/*" and r.errno_name == "ENOSYS"
    assert parse_rule(r.text) == r  # canonical text round-trips
    # fsync is also a FUSE op: it keeps its FUSE meaning unless asked for.
    assert not parse_rule("fsync:*:EIO").syscall
    assert parse_rule("sys.fsync:*:EIO").syscall
    assert parse_rule("fsync:*:ENOSYS", layer="syscall").text == "sys.fsync:*:ENOSYS"


@pytest.mark.parametrize(("text", "message"), [
    ("FICLONE,read:*:EIO", "mixes FUSE operations and syscalls"),
    ("FICLONE:*:vanish", "is a FUSE action"),
    ("fsync:*:EIO:src=x", "src= needs calls with a source"),
    ("FICLONE:*:EXDEV:src=/abs", "must be relative"),
])
def test_bad_syscall_rules_are_refused(text: str, message: str) -> None:
    from fakefs import RuleError, parse_rule

    with pytest.raises(RuleError, match=message):
        parse_rule(text)


def test_a_syscall_rule_is_refused_on_a_mount() -> None:
    from fakefs import RuleError
    from fakefs._client import fuse_rule_text

    with pytest.raises(RuleError, match="applies through 'fakefs run'"):
        fuse_rule_text("FICLONE:*:EXDEV")
