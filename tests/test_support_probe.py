"""filesystem_supports_reflink / probe_reflink asked of every lab filesystem."""

from __future__ import annotations

import errno
import os
import threading

import pytest
from _files import open_fds

import probe._support
from probe import ReflinkOutcome, ReflinkResult, filesystem_supports_reflink, probe_reflink
from probe._reflink import reflink_at as real_reflink_at
from probe.lab import KINDS, Lab

SUPPORTS = {"btrfs": True, "xfs": True, "xfs-noreflink": False, "ext4": False, "tmpfs": False}


@pytest.mark.parametrize("kind", KINDS)
def test_answer_per_filesystem_and_nothing_left_behind(lab: Lab, kind: str) -> None:
    d = lab.scratch_dir(kind, "probe")
    (d / "existing").write_bytes(b"keep")
    fds = open_fds()

    assert filesystem_supports_reflink(d) is SUPPORTS[kind]

    # Hidden probe names included: listdir shows dotfiles.
    assert os.listdir(d) == ["existing"]
    assert (d / "existing").read_bytes() == b"keep"
    assert open_fds() == fds


@pytest.mark.parametrize("kind", ["ext4", "tmpfs", "xfs-noreflink"])
def test_probe_reports_the_errno_behind_no(lab: Lab, kind: str) -> None:
    # The raw clone: ext4 can *copy* fine, and a probe that fell back to a
    # copy would wrongly say yes here.
    d = lab.scratch_dir(kind, "probe")
    assert probe_reflink(d) == ReflinkResult(ReflinkOutcome.UNSUPPORTED, errno.EOPNOTSUPP)
    assert os.listdir(d) == []


def test_readonly_bind_says_no_and_probe_says_why(lab: Lab) -> None:
    ro = lab.readonly_bind("btrfs")
    d = ro / lab.scratch_dir("btrfs", "probe").relative_to(lab.path("btrfs"))
    fds = open_fds()

    assert filesystem_supports_reflink(d) is False
    with pytest.raises(OSError) as exc:
        probe_reflink(d)

    assert exc.value.errno == errno.EROFS
    # The probe's own error, not a cleanup error hiding it -- and no
    # descriptor leaked on the way out.
    assert exc.value.__context__ is None, repr(exc.value.__context__)
    assert open_fds() == fds
    assert os.listdir(d) == []


def test_missing_directory_and_a_file_say_no(lab: Lab) -> None:
    d = lab.scratch_dir("btrfs", "probe")
    (d / "file").write_bytes(b"x")
    assert filesystem_supports_reflink(d / "missing") is False
    assert filesystem_supports_reflink(d / "file") is False
    assert os.listdir(d) == ["file"]


@pytest.mark.parametrize("kind", ["btrfs", "ext4"])
def test_concurrent_probes_in_one_directory_both_answer_right(lab: Lab, kind: str) -> None:
    d = lab.scratch_dir(kind, "probe")
    rounds = 40
    answers: list[list[bool]] = [[], []]
    gate = threading.Barrier(2)

    def prober(slot: int) -> None:
        for _ in range(rounds):
            gate.wait()  # both probes run in the same directory at once
            answers[slot].append(filesystem_supports_reflink(d))

    threads = [threading.Thread(target=prober, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert answers == [[SUPPORTS[kind]] * rounds] * 2
    assert os.listdir(d) == []


@pytest.mark.parametrize("after_clone", [True, False])
def test_keyboard_interrupt_leaves_nothing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, after_clone: bool
) -> None:
    """Ctrl-C during the probe: the kernel really made both probe files
    (and, with after_clone, the clone); the interrupt lands right after."""
    d = lab.scratch_dir("btrfs", "probe")
    real = real_reflink_at

    def interrupted(source: str, dest: str, dir_fd: int | None) -> ReflinkResult:
        if after_clone:
            assert real(source, dest, dir_fd).outcome is ReflinkOutcome.CLONED
            assert len(os.listdir(d)) == 2  # the interrupt really has something to clean
        raise KeyboardInterrupt

    monkeypatch.setattr(probe._support, "reflink_at", interrupted)
    fds = open_fds()
    with pytest.raises(KeyboardInterrupt):
        probe_reflink(d)
    assert os.listdir(d) == []
    assert open_fds() == fds
