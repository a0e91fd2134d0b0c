"""Image references: `[host[:port]/]repo[:tag][@sha256:...]`; no host means Docker Hub (`library/` for
one-word names). Credentials inside a reference (`user:pass@host/repo`) are refused, and never echoed: they
would end up in shell history, logs and error lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from slimserve.errors import SlimserveError

from .digest import Digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)


class Reference:
    registry: str          # host[:port] as written ("docker.io" for Docker Hub)
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        text = text.strip()
        _refuse_credentials(text)
        host, _, rest = text.partition("/")
        if rest and ("." in host or ":" in host or host == "localhost"):
            registry, remainder = host, rest
        else:
            registry, remainder = DOCKER_HUB, text
        name, _, digest = remainder.partition("@")
        repo, tag = name, None
        if ":" in name.rsplit("/", 1)[-1]:
            repo, tag = name.rsplit(":", 1)
        if not repo or not re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*", repo):
            raise SlimserveError(f"not a valid image reference: {text!r}",
                                 hint="use HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], e.g. docker.io/library/python:3.12-slim")
        if registry in (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API):
            registry = DOCKER_HUB
            if "/" not in repo:
                repo = f"library/{repo}"
        if tag is None and not digest:
            tag = "latest"
        return cls(registry, repo, tag, Digest.parse(digest) if digest else None)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def identifier(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        return str(self.digest) if self.digest else str(self.tag)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


_DIGEST_SUFFIX = re.compile(r"@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]+$")


def _refuse_credentials(text: str) -> None:
    """`user:password@host/repo` (or any `@` outside a trailing `@sha256:...`): refused, never echoed."""
    if "://" in text:
        raise SlimserveError("an image reference has no URL scheme: write HOST[:PORT]/REPO[:TAG]",
                             hint="drop the http:// or https:// prefix (use --insecure-registry for plain HTTP)")
    name = _DIGEST_SUFFIX.sub("", text)
    if "@" in name:  # nothing of the reference is echoed: which side of the `@` is the secret is a guess
        raise SlimserveError("image references cannot carry credentials (an `@` outside a trailing "
                             "@sha256:<digest>); the reference is not repeated here",
                             hint="log in instead (`docker login HOST` or `skopeo login HOST`); see the "
                                  "README's registry credentials section")
