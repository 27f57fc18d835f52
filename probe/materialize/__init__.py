"""The batch materializer: many blobs into many worktrees, cloned where the
filesystem pair can, copied where it cannot, with one failure never deciding
for the rest of the batch.

``_batch`` is the entry (plan, work units, workers); ``_policy`` the per-pair
clone state machine; ``_worker`` one source into all its destinations;
``_dirs`` destination directories and staging; ``_report`` the results;
``_tree`` the tree walk that turns two directories into jobs.
"""

from ._batch import DEFAULT_MAX_WORKERS, materialize
from ._report import JobResult, JobStatus, MaterializeReport, PairStats

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "JobResult",
    "JobStatus",
    "MaterializeReport",
    "PairStats",
    "materialize",
]
