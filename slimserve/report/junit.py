"""`--format junit`: each platform a <testsuite>, each rule a <testcase>.

Failing checks carry a <failure>; warnings pass but say why in <system-out>. A report without any check
still yields one passing test case, because CI tools treat an empty JUnit file as an error.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TextIO

from slimserve.profiles.rules import PlatformVerdict
from slimserve.report import Report, verdict_line


def verdict_suite(parent: ET.Element, v: PlatformVerdict, classname: str) -> ET.Element:
    """One platform's verdict as a <testsuite>: one <testcase> per rule (build reuses it for its package)."""
    fails = sum(1 for f in v.findings if f.status == "fail")
    suite = ET.SubElement(parent, "testsuite", {"name": v.name, "tests": str(len(v.findings)),
                                                "failures": str(fails), "errors": "0", "skipped": "0"})
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "verdict", "value": verdict_line(v)})
    for f in v.findings:
        case = ET.SubElement(suite, "testcase", {"classname": f"{classname}.{v.name}", "name": f"{f.id}: {f.name}"})
        detail = f.reason + (f"\nsource: {f.source}" if f.source else "")
        if f.status == "fail":
            failure = ET.SubElement(case, "failure", {"message": f.reason, "type": "limit"})
            failure.text = detail
        elif f.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {detail}"
    return suite


def write_xml(root: ET.Element, out: TextIO) -> None:
    ET.indent(root)
    out.write('<?xml version="1.0" encoding="utf-8"?>\n')
    out.write(ET.tostring(root, encoding="unicode"))
    out.write("\n")


def render(report: Report, out: TextIO) -> None:
    total = sum(len(v.findings) for v in report.platforms)
    failures = sum(1 for v in report.platforms for f in v.findings if f.status == "fail")
    root = ET.Element("testsuites", {"name": "slimserve check", "tests": str(max(total, 1)),
                                     "failures": str(failures), "errors": "0"})
    for v in report.platforms:
        verdict_suite(root, v, "slimserve.check")
    if total == 0:
        suite = ET.SubElement(root, "testsuite", {"name": "slimserve check", "tests": "1", "failures": "0",
                                                  "errors": "0", "skipped": "0"})
        ET.SubElement(suite, "testcase", {"classname": "slimserve.check", "name": "no checks to run"})
    write_xml(root, out)
