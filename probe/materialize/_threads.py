"""The in-process workers of a batch: ``len(stats)`` threads, the calling
one included, taking units from one iterator (the clone and copy syscalls
release the GIL)."""

from __future__ import annotations

import threading

from ._worker import Context, Dest, ThreadStats, run_unit

__all__ = ["run_threads"]

Plan = list[tuple[str, list[Dest]]]


def run_threads(
    ctx: Context, units: list[Plan], stats: list[ThreadStats], errors: list[BaseException]
) -> None:
    """``units`` on ``len(stats)`` threads (this one included)."""
    it = iter(units)
    take_lock = threading.Lock()

    def work(mine: ThreadStats) -> None:
        try:
            while not ctx.stop.is_set():
                with take_lock:
                    unit = next(it, None)
                if unit is None:
                    return
                run_unit(ctx, unit, mine)
        except BaseException as exc:  # a bug or KeyboardInterrupt: stop everyone
            ctx.stop.set()
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in stats[1:]]
    try:
        for t in threads:
            t.start()
        work(stats[0])
    except BaseException as exc:
        # A thread that would not start, or a signal between two units:
        # the others must stop before anything is published.
        ctx.stop.set()
        errors.append(exc)
    _join(threads, ctx, errors)


def _join(threads: list[threading.Thread], ctx: Context, errors: list[BaseException]) -> None:
    """Wait for every worker, even through a Ctrl-C: the staged directories
    can only be removed (or published) once nothing writes into them."""
    for t in threads:
        while t.ident is not None:
            try:
                t.join()
                break
            except BaseException as exc:
                ctx.stop.set()
                errors.append(exc)
