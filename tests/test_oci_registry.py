"""Registry client details that the local `docker-registry` cannot show: reference parsing, Docker config
credentials, and the bearer-token challenge (public.ecr.aws, Docker Hub) against a small fake registry."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from slimserve.errors import SlimserveError, ToolError
from slimserve.packagers.oci.image import Platform
from slimserve.packagers.oci.registry import Reference, RegistryClient, basic_credentials

from .registry_fixture import docker_config


@pytest.mark.parametrize("text, registry, repo, tag", [
    ("python:3.12-slim", "docker.io", "library/python", "3.12-slim"),
    ("docker.io/library/python:3.12-slim", "docker.io", "library/python", "3.12-slim"),
    ("public.ecr.aws/lambda/python:3.12", "public.ecr.aws", "lambda/python", "3.12"),
    ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", "latest"),
    ("localhost/x:y", "localhost", "x", "y"),
])
def test_reference_parse(text: str, registry: str, repo: str, tag: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repo, tag)


def test_reference_with_digest_and_bad_names() -> None:
    ref = Reference.parse("r.example/x@sha256:" + "a" * 64)
    assert ref.tag is None and ref.identifier == "sha256:" + "a" * 64
    assert Reference.parse("python").api_host == "registry-1.docker.io"
    for bad in ("UPPER/case:1", "a//b", ""):
        with pytest.raises(SlimserveError, match="not a valid image reference"):
            Reference.parse(bad)


def test_docker_config_credentials(tmp_path: Path) -> None:
    folder = docker_config(tmp_path / "d", "https://index.docker.io/v1/", "u", "p:w")
    assert basic_credentials("docker.io", folder / "config.json") == ("u", "p:w")
    assert basic_credentials("other.example", folder / "config.json") is None
    assert basic_credentials("x", tmp_path / "missing.json") is None


class _TokenRegistry(http.server.BaseHTTPRequestHandler):
    token_queries: ClassVar[list[dict[str, list[str]]]] = []

    def log_message(self, *args: object) -> None:
        return None

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            type(self).token_queries.append(urllib.parse.parse_qs(url.query))
            self._send(200, json.dumps({"token": "tok123"}).encode())
        elif self.headers.get("Authorization") != "Bearer tok123":
            host = self.headers["Host"]
            self._send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="http://{host}/token",service="fake"'})
        else:
            self._send(404, json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN"}]}).encode())


@pytest.fixture
def token_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    _TokenRegistry.token_queries = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_bearer_challenge_is_answered_with_a_scoped_token(token_registry: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    client = RegistryClient(insecure=frozenset({token_registry}), cache_dir=tmp_path / "cache")
    with pytest.raises(ToolError, match=r"not found \(404\)"):
        client.pull(Reference.parse(f"{token_registry}/lambda/python:3.12"), Platform.parse("linux/amd64"))
    assert _TokenRegistry.token_queries == [{"service": ["fake"], "scope": ["repository:lambda/python:pull"]}]
