"""JUnit XML for a conformance report, the format every CI system reads.

One <testsuite> per run, one <testcase> per variant (classname: the
scenario, name: column and set-up). A not-applicable case is <skipped> with
its reason -- CI shows it as skipped, never as passed. The suite's
<properties> carry the kernel release and each place's filesystem type and
mount options, because a conformance result means nothing without them.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from ._runner import Report, Status

__all__ = ["junit_xml", "write_junit"]


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


def write_junit(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write atomically: a CI step reading the file never sees half of it."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(junit_xml(report))
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
