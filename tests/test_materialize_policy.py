"""The per-pair reflink policy as a pure state machine.

No filesystem here returns EAGAIN from a clone (ZFS block cloning does), and
the lab tests cannot reach every transition, so the rules are also checked
by feeding the policy errnos directly. This tests *our* decisions about an
errno, not the kernel's answer: the kernel's answers are in
test_materialize.py.
"""

from __future__ import annotations

import errno

import pytest

from probe.materialize._policy import EINVAL_LIMIT, PairPolicy


def _failing(*errnos: int | None):  # type: ignore[no-untyped-def]
    seq = list(errnos)

    def clone(_dst: int, _src: int) -> None:
        e = seq.pop(0)
        if e is not None:
            raise OSError(e, errno.errorcode[e])

    return clone


def _never_gone() -> bool:
    return False


def test_eagain_is_retried_then_copied_and_never_disables() -> None:
    p = PairPolicy(eagain_window=0.05)
    att = p.clone(_failing(errno.EAGAIN, errno.EAGAIN, None), 0, 0, _never_gone)
    assert att.cloned and att.calls == 3 and att.failures == 2
    # A clone that finally succeeded carries no errno: a copy did not happen.
    assert att.errno is None and p.proven
    # A source that stays busy is retried until the pair's window is spent...
    att = p.clone(_failing(*[errno.EAGAIN] * 100), 0, 0, _never_gone)
    assert not att.cloned and att.calls > 3 and att.errno == errno.EAGAIN
    # ...and after that it costs one call and a copy: the window is the
    # pair's, not each file's, and the pair stays on.
    for _ in range(3):
        att = p.clone(_failing(errno.EAGAIN), 0, 0, _never_gone)
        assert not att.cloned and att.calls == 1 and att.errno == errno.EAGAIN
    assert p.enabled and p.disabled_errno is None
    assert p.clone(_failing(None), 0, 0, _never_gone).cloned


def test_eagain_before_any_success_leaves_pair_undecided() -> None:
    p = PairPolicy(eagain_window=0.01)
    p.clone(_failing(*[errno.EAGAIN] * 100), 0, 0, _never_gone)
    assert p.enabled and not p.proven


@pytest.mark.parametrize("err", [errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS])
def test_unsupported_disables_at_once(err: int) -> None:
    p = PairPolicy()
    att = p.clone(_failing(err), 0, 0, _never_gone)
    assert not att.cloned and att.calls == 1
    assert not p.enabled and p.disabled_errno == err
    att = p.clone(_failing(), 0, 0, _never_gone)  # no syscall any more
    assert att.calls == 0


def test_einval_disables_only_after_the_limit_without_success() -> None:
    p = PairPolicy()
    for _ in range(EINVAL_LIMIT - 1):
        p.clone(_failing(errno.EINVAL), 0, 0, _never_gone)
        assert p.enabled
    p.clone(_failing(errno.EINVAL), 0, 0, _never_gone)
    assert not p.enabled and p.disabled_errno == errno.EINVAL


def test_after_a_success_nothing_unsupported_disables() -> None:
    p = PairPolicy()
    assert p.clone(_failing(None), 0, 0, _never_gone).cloned
    for err in [errno.EINVAL] * (EINVAL_LIMIT + 2) + [errno.EXDEV, errno.EOPNOTSUPP]:
        att = p.clone(_failing(err), 0, 0, _never_gone)
        assert not att.cloned and att.errno == err
    assert p.enabled and p.proven


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_real_errors_are_handed_back_counted_and_do_not_decide(err: int) -> None:
    p = PairPolicy()
    att = p.clone(_failing(err), 0, 0, _never_gone)
    assert att.error is not None and att.error.errno == err
    assert (att.cloned, att.calls, att.failures) == (False, 1, 1)
    assert p.enabled and not p.proven
