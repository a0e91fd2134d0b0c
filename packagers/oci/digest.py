"""Content digests as a frozen value (`sha256:<64 hex>`), never loose strings."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from slimserve.errors import SlimserveError

_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "sha512": re.compile(r"^[0-9a-f]{128}$")}


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        pattern = _HEX.get(self.algorithm)
        if pattern is None or not pattern.match(self.hex):
            raise SlimserveError(f"not a valid digest: {self.algorithm}:{self.hex}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, hex_ = text.strip().partition(":")
        if not sep:
            raise SlimserveError(f"not a valid digest: {text!r} (expected sha256:<64 hex digits>)")
        return cls(algorithm, hex_)

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls("sha256", hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, path: Path, chunk: int = 1 << 20) -> Digest:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        return cls("sha256", h.hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"
