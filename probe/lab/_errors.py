"""The lab's exceptions."""


class LabError(RuntimeError):
    """The lab could not do what was asked (build, teardown)."""


class LabUnavailable(LabError):
    """The lab cannot run here; the message names exactly what is missing."""
