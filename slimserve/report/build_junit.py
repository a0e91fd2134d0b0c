"""`build --format junit`: the build as JUnit XML, failing exactly when `slimserve build` exits 1.

Layout (a choice: CI test reporters turn every <failure> red, so only what fails the build may fail here):
- suite `choice`: one case, "a candidate meets every budget for PLATFORM". It fails when none does, its
  text listing every candidate and the budgets it missed; when one does, it passes and says which was chosen
  and what the others missed (<system-out>). Candidates that lose to the winner are not failures.
- one suite per platform the packaged winner was checked against: one case per rule, as `check --format
  junit` writes it (a failing rule is a <failure>, a warning passes with <system-out>).
The file always holds at least the `choice` case, so it is never an empty (error) JUnit report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TextIO

from slimserve.report.build_report import BuildResult
from slimserve.report.junit import verdict_suite, write_xml


def _misses(result: BuildResult) -> list[str]:
    return [f"{recipe}: {'; '.join(missed)}" for recipe, missed in result.decision.misses.items() if missed]


def render(result: BuildResult, out: TextIO) -> None:
    decision, platform = result.decision, result.platform
    root = ET.Element("testsuites", {"name": "slimserve build"})
    choice = ET.SubElement(root, "testsuite", {"name": "choice", "tests": "1",
                                               "failures": "0" if decision.winner else "1",
                                               "errors": "0", "skipped": "0"})
    case = ET.SubElement(choice, "testcase", {"classname": "slimserve.build.choice",
                                              "name": f"a candidate meets every budget for {platform}"})
    if decision.winner is None:
        failure = ET.SubElement(case, "failure", {"message": f"no candidate meets every budget for {platform}",
                                                  "type": "budget"})
        failure.text = "\n".join(_misses(result))
    else:
        lines = [f"chosen: {decision.winner} ({result.target})"] + ([f"why: {decision.why}"] if decision.why else []) \
            + [f"missed: {m}" for m in _misses(result)]
        ET.SubElement(case, "system-out").text = "\n".join(lines)
    if result.check is not None:
        for v in result.check.platforms:
            verdict_suite(root, v, f"slimserve.build.package.{decision.winner}")
    suites = root.findall("testsuite")
    root.set("tests", str(sum(int(s.get("tests", "0")) for s in suites)))
    root.set("failures", str(sum(int(s.get("failures", "0")) for s in suites)))
    root.set("errors", "0")
    write_xml(root, out)
