"""The ``fakefs`` command line, run as a real program."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fakefs
from fakefs._mounts import find_mount


def _cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakefs.cli", *args], capture_output=True,
                          text=True, check=check, timeout=120)


def _wait_exit(pid: int) -> None:
    """Block until ``pid`` (not our child) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], 30)[0], f"daemon {pid} did not exit"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fault", "opne:f:EIO"], "unknown operation 'opne'"),
        (["--fault", "open:f:EWHAT"], "unknown action 'EWHAT'"),
        (["--fault", "open:f"], "malformed rule"),
        (["--fault", "open:f:ENOSYS"], "ENOSYS is refused for open"),
    ],
)
@pytest.mark.parametrize("command", ["mount", "run"])
def test_bad_rules_exit_2_with_one_line(mount_dirs: tuple[Path, Path], extra: list[str],
                                        message: str, command: str) -> None:
    backing, mnt = mount_dirs
    tail = ["--", "true"] if command == "run" else []
    res = _cli(command, str(backing), str(mnt), *extra, *tail)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("fakefs: error: ") and message in res.stderr
    assert find_mount(mnt) is None


def test_bad_paths_exit_2_with_one_line(mount_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    backing, mnt = mount_dirs
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases = [
        ((str(tmp_path / "nope"), str(mnt)), "backing directory"),
        ((str(backing / "f"), str(mnt)), "is not a directory"),
        ((str(backing), str(tmp_path / "absent")), "does not exist"),
        ((str(backing), str(full)), "is not empty"),
    ]
    for args, message in cases:
        res = _cli("mount", *args, "--background")
        assert res.returncode == 2, res
        assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert find_mount(mnt) is None and find_mount(full) is None


def test_already_mounted_exit_2(mount_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    backing, mnt = mount_dirs
    with fakefs.mount(backing, mnt) as fs:
        res = _cli("mount", str(backing), str(mnt), "--background")
        assert res.returncode == 2
        assert "already mounted" in res.stderr and res.stderr.count("\n") == 1
        assert fs.ping()["pid"] == fs.pid  # the first mount is untouched
    assert find_mount(mnt) is None


def test_background_mount_into_a_closed_pipe_is_undone_without_a_traceback(
    mount_dirs: tuple[Path, Path],
) -> None:
    # `fakefs mount --background B M | true`: the JSON line that names the
    # daemon cannot be written, so the mount must not stay (nobody was told
    # its pid) and the user gets an exit status, not a BrokenPipeError.
    backing, mnt = mount_dirs
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the line is written
    try:
        res = subprocess.run([sys.executable, "-m", "fakefs.cli", "mount", "--background",
                              str(backing), str(mnt)], stdout=w, stderr=subprocess.PIPE,
                             text=True, check=False, timeout=120)
    finally:
        os.close(w)
    assert res.returncode == 128 + signal.SIGPIPE, res.stderr
    assert "Traceback" not in res.stderr
    assert find_mount(mnt) is None
    assert os.listdir(mnt) == []


def test_background_mount_control_and_unmount(mount_dirs: tuple[Path, Path]) -> None:
    backing, mnt = mount_dirs
    res = _cli("mount", str(backing), str(mnt), "--background", "--fault", "open:blobs/*:EXDEV",
               check=True)
    info = json.loads(res.stdout)
    assert info["mountpoint"] == str(mnt)
    assert (mnt / "f").read_text() == "file\n"

    listed = [json.loads(line) for line in _cli("fault", "list", str(mnt), check=True)
              .stdout.splitlines()]
    assert [e["rule"] for e in listed] == ["open:blobs/*:EXDEV"]
    added = json.loads(_cli("fault", "add", str(mnt), "read:f:EIO", check=True).stdout)
    cat = subprocess.run(["cat", str(mnt / "f")], capture_output=True, text=True, check=False)
    assert cat.returncode == 1 and "Input/output error" in cat.stderr
    counters = json.loads(_cli("counters", str(mnt), check=True).stdout)
    assert counters["injected"] == 1 and counters["rules"][str(added["id"])] == 1
    trace = [json.loads(line) for line in _cli("trace", str(mnt), "--clear", check=True)
             .stdout.splitlines()]
    assert any(r["op"] == "read" and r["result"] == "EIO" for r in trace)
    assert _cli("trace", str(mnt), check=True).stdout.count('"op": "read"') == 0
    _cli("fault", "remove", str(mnt), str(added["id"]), check=True)
    assert (mnt / "f").read_text() == "file\n"
    _cli("fault", "clear", str(mnt), check=True)
    assert _cli("fault", "list", str(mnt), check=True).stdout == ""
    bad = _cli("fault", "add", str(mnt), "read:f:ENOSYS")
    assert bad.returncode == 2 and "refused" in bad.stderr

    _cli("unmount", str(mnt), check=True)
    assert find_mount(mnt) is None
    _wait_exit(info["pid"])
    assert not os.path.exists(info["control"])
    again = _cli("unmount", str(mnt))
    assert again.returncode == 2 and "not a fakefs mount" in again.stderr


def test_run_reports_counters_and_the_command_status(mount_dirs: tuple[Path, Path]) -> None:
    backing, mnt = mount_dirs
    res = _cli("run", str(backing), str(mnt), "--fault", "open:f:EIO", "--", "cat",
               str(mnt / "f"))
    assert res.returncode == 1
    assert "Input/output error" in res.stderr
    counters = json.loads(res.stderr.strip().splitlines()[-1])
    assert counters["injected"] == 1
    assert find_mount(mnt) is None

    ok = _cli("run", str(backing), str(mnt), "--", "sh", "-c",
              'cat "$FAKEFS_MOUNTPOINT/f"; exit 7')
    assert ok.returncode == 7
    assert ok.stdout == "file\n"
    assert find_mount(mnt) is None


def test_foreground_mount_serves_until_unmounted(mount_dirs: tuple[Path, Path]) -> None:
    backing, mnt = mount_dirs
    proc = subprocess.Popen([sys.executable, "-m", "fakefs.cli", "mount", str(backing),
                             str(mnt)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] is True
        assert (mnt / "f").read_text() == "file\n"
        assert _cli("unmount", str(mnt)).returncode == 0
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert find_mount(mnt) is None


@pytest.mark.parametrize("where", ["mountpoint-in-backing", "same", "backing-in-mountpoint"])
def test_nested_mount_is_refused_before_anything(mount_dirs: tuple[Path, Path], where: str) -> None:
    backing, mnt = mount_dirs
    if where == "mountpoint-in-backing":
        (backing / "sub").mkdir()
        args = [str(backing), str(backing / "sub")]
    elif where == "same":
        args = [str(mnt), str(mnt)]
    else:
        inner = mnt.parent / "outer" / "inner"
        inner.mkdir(parents=True)
        args = [str(inner), str(mnt.parent / "outer")]
    for cmd in (["mount", *args, "--background"], ["run", *args, "--", "true"]):
        res = _cli(*cmd)
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and "inside" in res.stderr
    assert find_mount(args[1]) is None


# SIGINT at its default action too: the command's own KeyboardInterrupt
# traceback would hide whether fakefs printed one.
_WAITER = ("import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
           "print('ready', os.getpid(), flush=True); signal.pause()")


@pytest.mark.parametrize("sig", [15, 2, 1])
@pytest.mark.parametrize("mode", ["fuse", "syscall"])
def test_signal_to_run_reaches_the_command_and_unmounts(
    mount_dirs: tuple[Path, Path], tmp_path: Path, sig: int, mode: str
) -> None:
    backing, mnt = mount_dirs
    where = [str(backing), str(mnt)] if mode == "fuse" else ["--root", str(tmp_path)]
    fault = "open:nothing:EIO" if mode == "fuse" else "FICLONE:nothing:EXDEV"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakefs.cli", "run", *where, "--fault", fault, "--",
         sys.executable, "-c", _WAITER],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        word, pid = proc.stdout.readline().split()  # the command runs: no race
        assert word == "ready"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig
    assert "Traceback" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # the command is gone, reaped
    assert find_mount(mnt) is None


# The command makes one trapped call (so fakefs's answering thread exists),
# then prints the blocked-signal mask of each of fakefs's other threads.
_PARENT_THREADS = """
import fcntl, os, sys, tempfile
with tempfile.TemporaryFile(dir=sys.argv[1]) as a, tempfile.TemporaryFile(dir=sys.argv[1]) as b:
    try:
        fcntl.ioctl(b.fileno(), 0x40049409, a.fileno())  # FICLONE
    except OSError:
        pass
ppid = os.getppid()
for tid in os.listdir(f"/proc/{ppid}/task"):
    if int(tid) != ppid:
        with open(f"/proc/{ppid}/task/{tid}/status") as f:
            print(next(int(l.split()[1], 16) for l in f if l.startswith("SigBlk:")))
"""


def test_run_leaves_the_forwarded_signals_to_its_main_thread(tmp_path: Path) -> None:
    # Delivered to the answering thread, a SIGINT would never wake the main
    # thread out of its waitpid(), and so never reach the command: both
    # would wait for ever (see fakefs/_syscall/_supervisor.py, _deaf).
    res = _cli("run", "--root", str(tmp_path), "--fault", "FICLONE:nothing:EXDEV", "--",
               sys.executable, "-c", _PARENT_THREADS, str(tmp_path))
    assert res.returncode == 0, res.stderr
    masks = [int(line) for line in res.stdout.split()]
    assert masks, "fakefs run has no answering thread"
    for mask in masks:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            assert mask >> (sig - 1) & 1, (sig, hex(mask))
    assert json.loads(res.stderr.splitlines()[-1])["syscalls"] == {"FICLONE": 1}


# The command signals fakefs at once, while fakefs is still starting it up
# (a shell is running before fakefs has its answering thread): the signal
# must reach the command, never leave it running behind an exited fakefs.
# The command exits only through the forwarded SIGINT (its trap).
_SIGNALS_PARENT = "trap 'echo got; exit 0' INT; kill -INT $PPID; while read -r _; do :; done"


@pytest.mark.parametrize("mode", ["fuse", "syscall"])
def test_a_signal_while_the_command_starts_reaches_it(
    mount_dirs: tuple[Path, Path], tmp_path: Path, mode: str
) -> None:
    backing, mnt = mount_dirs
    where = [str(backing), str(mnt)] if mode == "fuse" else ["--root", str(tmp_path)]
    fault = "open:nothing:EIO" if mode == "fuse" else "FICLONE:nothing:EXDEV"
    # The command's stdin: its read blocks until the trap fires, and ends
    # at EOF when the test closes it (so a failed run leaves no command).
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fakefs.cli", "run", *where, "--fault", fault, "--",
             "sh", "-c", _SIGNALS_PARENT],
            stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.close(r)
        os.close(w)
    assert out.split() == ["got"], err
    assert proc.returncode == 128 + signal.SIGINT
    assert "Traceback" not in err
    assert find_mount(mnt) is None


def test_dead_daemon_mount_is_named_and_cleared(mount_dirs: tuple[Path, Path]) -> None:
    backing, mnt = mount_dirs
    res = _cli("mount", str(backing), str(mnt), "--background", check=True)
    info = json.loads(res.stdout)
    # Served once first: the root's attributes are then in the kernel's
    # cache, and a stat() of the mountpoint still answers after the daemon
    # died (the refusal said "already mounted" then).
    assert (mnt / "f").read_text() == "file\n"
    os.stat(mnt)
    os.kill(int(info["pid"]), 9)
    _wait_exit(int(info["pid"]))
    again = _cli("mount", str(backing), str(mnt), "--background")
    assert again.returncode == 2
    assert "dead fakefs mount" in again.stderr and "fakefs unmount" in again.stderr
    cleared = _cli("unmount", str(mnt))
    assert cleared.returncode == 0, cleared.stderr
    assert find_mount(mnt) is None
    assert not os.path.exists(os.path.dirname(info["control"]))


def test_startup_failures_are_not_bad_input() -> None:
    # exit 2 means "bad input"; a daemon that failed must not read as one.
    assert not issubclass(fakefs.DaemonError, ValueError)
    assert issubclass(fakefs.MountError, ValueError)
    assert issubclass(fakefs.DaemonError, fakefs.FakeFSError)


def test_run_with_a_mount_takes_syscall_rules_relative_to_it(mount_dirs: tuple[Path, Path]) -> None:
    backing, mnt = mount_dirs
    (backing / "a").write_text("a\n")
    script = "cp --reflink=always a b; echo b=$?; cp --reflink=always a c; echo c=$?"
    res = _cli("run", str(backing), str(mnt), "--fault", "FICLONE:b:EXDEV",
               "--fault", "sys.fsync:nothing:EIO", "--", "sh", "-c", f"cd {mnt} && {script}")
    assert res.returncode == 0, res.stderr
    # b: our EXDEV at the syscall; c: the kernel's own answer for a FUSE file.
    assert "b=1" in res.stdout and "c=1" in res.stdout
    assert "Invalid cross-device link" in res.stderr
    assert "Operation not supported" in res.stderr
    counters = json.loads(res.stderr.strip().splitlines()[-1])
    assert [r["hits"] for r in counters["syscall_rules"]] == [1, 0]
    assert "ops" in counters  # the FUSE daemon's counters too


@pytest.mark.parametrize("command", [[], ["run"], ["mount"], ["fault", "add"]])
def test_help_teaches_the_grammar_and_its_examples_parse(command: list[str]) -> None:
    from fakefs._rules import parse_rule

    proc = _cli(*command, "--help", check=True)
    text = proc.stdout
    assert "RULE is OPS:GLOB:ACTION[:TRIGGER]..." in text
    # Every example rule is one the parser takes, for the layer it names.
    rules = [line.split("'")[1] for line in text.splitlines() if line.startswith("  fakefs ")]
    assert len(rules) == 3
    for rule in rules:
        parse_rule(rule)
    # Every action and trigger the parser's own error names is taught.
    for word in ("vanish", "vanish-tree", "delay=", "short=", "times=", "nth=", "p=", "seed=",
                 "pid=", "src="):
        assert word in text, word


def test_every_syscall_name_the_help_lists_is_one_the_parser_takes() -> None:
    from fakefs._rules import parse_rule

    text = _cli("run", "--help", check=True).stdout
    listed = text[text.index("or system calls (") + len("or system calls ("):].split(")")[0]
    names = [n.strip() for n in listed.replace("\n", " ").split(",")]
    assert len(names) >= 15, names
    for name in names:
        parse_rule(f"{name}:x:EIO", layer="syscall")


@pytest.mark.parametrize(("option", "value"), [("--trace-limit", "-5"), ("--trace-limit", "x"),
                                              ("--cache-timeout", "nan"),
                                              ("--cache-timeout", "-1")])
def test_a_bad_limit_is_one_line_exit_2(tmp_path: Path, option: str, value: str) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "m").mkdir()
    res = _cli("run", str(tmp_path / "b"), str(tmp_path / "m"), option, value, "--", "true")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"fakefs: error: argument {option}")
