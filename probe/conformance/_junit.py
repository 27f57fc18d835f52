"""JUnit XML for a conformance report, the format every CI system reads.

One <testsuite> per run, one <testcase> per variant (classname: the
scenario, name: column and set-up). A not-applicable case is <skipped> with
its reason -- CI shows it as skipped, never as passed. The suite's
<properties> carry the kernel release and each place's filesystem type and
mount options, because a conformance result means nothing without them.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from .._fd import DIR_FLAGS, close_quietly
from .._platform import check_replaceable, create_dest, remove_if_same
from .._publish import publish
from .._tempname import reap_dead, temp_name
from ._runner import Report, Status

__all__ = ["JunitFile", "junit_xml", "write_junit"]


def junit_xml(report: Report, *, suite_name: str = "cowprobe.conformance") -> bytes:
    root = ET.Element("testsuites", name=suite_name)
    suite = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(len(report.cases)),
        failures=str(report.count(Status.FAIL)),
        errors="0",
        skipped=str(report.count(Status.NA)),
        time=f"{report.seconds:.3f}",
        timestamp=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        hostname=socket.gethostname(),
    )
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key, ""))
    props = ET.SubElement(suite, "properties")
    for name, value in report.properties.items():
        ET.SubElement(props, "property", name=name, value=value)
    for case in report.cases:
        el = ET.SubElement(
            suite,
            "testcase",
            classname=f"conformance.{case.scenario.id}",
            name=f"{case.column.value}: {case.label}",
            time=f"{case.seconds:.3f}",
        )
        if case.status is Status.FAIL:
            fail = ET.SubElement(el, "failure", message=case.detail[:500], type="deviation")
            expected = case.scenario.expect_for(case.variant).describe() if case.variant else ""
            fail.text = (
                f"scenario: {case.scenario.title}\n"
                f"expected: {expected}\n"
                f"observed: {case.observed}\n{case.detail}\n"
            )
        elif case.status is Status.NA:
            ET.SubElement(el, "skipped", message=f"not applicable: {case.detail}")
        elif case.observed:
            ET.SubElement(el, "system-out").text = f"observed: {case.observed}\n"
    ET.indent(root)
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out


class JunitFile:
    """``path``, made ready for a run's JUnit XML before the run.

    Everything that would keep the file from being written fails here, not
    after a suite of minutes: the directory missing, read-only or not ours
    to write, ``path`` a directory or a device, FIFO or socket (replacing
    one with a regular file destroys it: a tester's /dev/full). The XML is
    written to an unpredictable temporary beside ``path``, created
    exclusively and without following a symlink (one planted there can only
    fail the create, never redirect it), then renamed over ``path``: over a
    regular file, a symlink (replaced, not followed) or nothing. Until
    ``write`` succeeds ``path`` is untouched; ``close`` discards the
    temporary (a ``with`` block closes).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._where = str(self.path)
        self._name = self.path.name
        if not self._name:  # "/", or a path ending in "..": a directory
            raise IsADirectoryError(errno.EISDIR, "destination is a directory", self._where)
        self._dir_fd = os.open(self.path.parent, DIR_FLAGS)
        try:
            # A run killed by SIGKILL left its temporary: reaped on the next.
            reap_dead(self._dir_fd)
            check_replaceable(self._name, self._dir_fd, self._where)
            self._tmp = temp_name(self._name)
            try:
                self._fd = create_dest(self._tmp, 0o666, dir_fd=self._dir_fd)
            except OSError as err:
                err.filename = self._where  # the temporary's name means nothing to the user
                raise
            self._ours = os.fstat(self._fd)
        except BaseException:
            os.close(self._dir_fd)
            raise
        self._published = False

    def write(self, report: Report) -> Path:
        """Put ``report`` at ``path`` atomically (a CI step reading the file
        never sees half of it); the temporary is gone either way."""
        if self._fd < 0:
            raise ValueError(f"{self._where}: this JUnit file was already written or closed")
        try:
            view = memoryview(junit_xml(report))
            while view:
                view = view[os.write(self._fd, view):]
            fd, self._fd = self._fd, -1
            os.close(fd)  # a close error (NFS write-back) fails the write
            # Again: the run took minutes, and the name may be a FIFO now.
            check_replaceable(self._name, self._dir_fd, self._where)
            publish(self._tmp, self._name, self._dir_fd, fsync=False)
            self._published = True
        finally:
            self.close()
        return self.path

    def close(self) -> None:
        """Discard the temporary unless it was published (idempotent)."""
        if self._dir_fd < 0:
            return
        if self._fd >= 0:
            close_quietly(self._fd)
            self._fd = -1
        if not self._published:
            remove_if_same(self._tmp, self._ours, dir_fd=self._dir_fd)
        os.close(self._dir_fd)
        self._dir_fd = -1

    def __enter__(self) -> JunitFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def write_junit(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write ``report`` to ``path`` atomically (see ``JunitFile``)."""
    with JunitFile(path) as junit:
        return junit.write(report)
