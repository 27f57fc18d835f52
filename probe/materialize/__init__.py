"""The batch materializer: many blobs into many worktrees, cloned where the
filesystem pair can, copied where it cannot, with one failure never deciding
for the rest of the batch.

``_batch`` is the entry (plan, work units, workers); ``_policy`` the per-pair
clone state machine; ``_worker`` one source into all its destinations;
``_dirs`` destination directories and staging (the worktree boundary);
``_publish`` staged directories into place, or removed when interrupted;
``_report`` the results; ``_tree`` the tree walk and ``_mirror`` the whole
tree mirror (``mirror``) built on the batch; ``_threads`` the in-process
workers and ``_procs`` / ``_procchild`` the forked worker processes
(``processes=``).
"""

from ._batch import DEFAULT_MAX_WORKERS, materialize
from ._mirror import EntryResult, MirrorReport, mirror
from ._report import JobResult, JobStatus, MaterializeReport, PairStats

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "EntryResult",
    "JobResult",
    "JobStatus",
    "MaterializeReport",
    "MirrorReport",
    "PairStats",
    "materialize",
    "mirror",
]
