"""`--format github`: GitHub Actions workflow commands, one annotation per failing or warning check.

Escaping follows the runner's command format (actions/toolkit, packages/core/src/command.ts):
message data escapes `%` → %25, `\r` → %0D, `\n` → %0A; property values (title=…) additionally escape
`:` → %3A and `,` → %2C, since those delimit properties.
"""

from __future__ import annotations

from typing import TextIO

from slimserve.report import Report, verdict_line


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, title: str, message: str) -> str:
    return f"::{level} title={escape_property(title)}::{escape_data(message)}"


def render(report: Report, out: TextIO) -> None:
    for v in report.platforms:
        for f in v.findings:
            if f.status == "pass":
                continue
            level = "error" if f.status == "fail" else "warning"
            message = f.reason + (f"\nsource: {f.source}" if f.source else "")
            out.write(annotation(level, f"{v.name}: {f.name}", message) + "\n")
        level = "notice" if v.fits else "error"
        out.write(annotation(level, f"slimserve check {v.name}", f"{v.name} {verdict_line(v)}") + "\n")
