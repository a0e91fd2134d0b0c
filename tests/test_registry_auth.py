# ruff: noqa: F811  -- the registry fixtures are imported from registry_fixture and taken as parameters
"""Registry credentials where crane, skopeo, podman and docker users keep them, against a real registry
with htpasswd basic auth: `$REGISTRY_AUTH_FILE`, podman's `$XDG_RUNTIME_DIR/containers/auth.json`, the
Docker config's `auths`, `credHelpers` and `credsStore` (a `docker-credential-<name>` helper on PATH)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from slimserve.errors import SlimserveError, ToolError
from slimserve.packagers.oci.image import Platform
from slimserve.packagers.oci.registry import Reference, RegistryClient

from .registry_fixture import (  # noqa: F401
    PASSWORD,
    USER,
    Registry,
    auth_registry,
    make_base_layout,
    needs_registry,
    needs_skopeo,
    skopeo,
)

pytestmark = [needs_registry, needs_skopeo]
AMD64 = Platform.parse("linux/amd64")


@pytest.fixture(scope="module")
def private_ref(auth_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A base image in the password-protected registry, put there by skopeo (the independent tool)."""
    layout = make_base_layout(tmp_path_factory.mktemp("base") / "layout")
    ref = f"{auth_registry.host}/test/private:1"
    proc = skopeo("copy", "--dest-tls-verify=false", "--insecure-policy", "--dest-creds", f"{USER}:{PASSWORD}",
                  f"oci:{layout}", f"docker://{ref}")
    assert proc.returncode == 0, proc.stderr
    return ref


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No credential of the machine running the tests is visible: HOME, DOCKER_CONFIG and the rest point
    into tmp_path, and PATH starts with a folder for fake credential helpers."""
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _auth(user: str = USER, password: str = PASSWORD) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _write(path: Path, data: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _helper(bin_dir: Path, name: str, host: str, password: str = PASSWORD) -> Path:
    """A `docker-credential-<name>` speaking the helper protocol: server URL on stdin, JSON on stdout; it logs
    the servers it was asked about, and answers "credentials not found" for any other server."""
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/bin/sh
read server
echo "$1 $server" >> "{bin_dir}/{name}.log"
if [ "$server" = "{host}" ]; then
  printf '{{"ServerURL": "%s", "Username": "{USER}", "Secret": "{password}"}}' "$server"
else
  echo "credentials not found in native keychain"; exit 1
fi
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _pull(ref: str, tmp: Path) -> None:
    client = RegistryClient(insecure=frozenset({ref.split("/")[0]}), cache_dir=tmp / "blobs")
    pulled = client.pull(Reference.parse(ref), AMD64)
    assert len(pulled.image.layers) == 2


def test_anonymous_pull_is_refused(private_ref: str, isolated: Path) -> None:
    with pytest.raises(ToolError, match="no credentials stored"):
        _pull(private_ref, isolated)


def test_registry_auth_file(private_ref: str, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = private_ref.split("/")[0]
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(_write(isolated / "auth.json", {"auths": {host: {"auth": _auth()}}})))
    _pull(private_ref, isolated)


def test_registry_auth_file_comes_before_the_docker_config(private_ref: str, isolated: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    host = private_ref.split("/")[0]
    _write(isolated / "docker" / "config.json", {"auths": {host: {"auth": _auth(password="wrong")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(_write(isolated / "auth.json", {"auths": {host: {"auth": _auth()}}})))
    _pull(private_ref, isolated)


def test_podman_runtime_auth_file(private_ref: str, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = private_ref.split("/")[0]
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(isolated / "run"))
    _write(isolated / "run" / "containers" / "auth.json", {"auths": {host: {"auth": _auth()}}})
    _pull(private_ref, isolated)


def test_docker_config_username_and_password(private_ref: str, isolated: Path) -> None:
    host = private_ref.split("/")[0]
    _write(isolated / "docker" / "config.json", {"auths": {f"http://{host}/": {"username": USER, "password": PASSWORD}}})
    _pull(private_ref, isolated)


def test_credential_helper_for_the_host(private_ref: str, isolated: Path) -> None:
    host = private_ref.split("/")[0]
    _helper(isolated / "bin", "slimtest", host)
    _write(isolated / "docker" / "config.json", {"credHelpers": {host: "slimtest"}, "auths": {}})
    _pull(private_ref, isolated)
    assert (isolated / "bin" / "slimtest.log").read_text().split() == ["get", host]  # run once, not per request


def test_credentials_store(private_ref: str, isolated: Path) -> None:
    host = private_ref.split("/")[0]
    _helper(isolated / "bin", "store", host)
    _write(isolated / "docker" / "config.json", {"credsStore": "store", "auths": {host: {}}})
    _pull(private_ref, isolated)


def test_helper_refused_credentials_say_so(private_ref: str, isolated: Path) -> None:
    host = private_ref.split("/")[0]
    _helper(isolated / "bin", "slimtest", host, password="wrong")
    _write(isolated / "docker" / "config.json", {"credHelpers": {host: "slimtest"}})
    with pytest.raises(ToolError, match="credentials were refused") as info:
        _pull(private_ref, isolated)
    assert "wrong" not in str(info.value) + str(info.value.hint)


def test_helper_without_credentials_is_anonymous(private_ref: str, isolated: Path) -> None:
    _helper(isolated / "bin", "slimtest", "some.other.registry")
    _write(isolated / "docker" / "config.json", {"credsStore": "slimtest"})
    with pytest.raises(ToolError, match="no credentials stored"):
        _pull(private_ref, isolated)


def test_missing_helper_is_one_clear_line(private_ref: str, isolated: Path) -> None:
    host = private_ref.split("/")[0]
    _write(isolated / "docker" / "config.json", {"credHelpers": {host: "absent-helper"}})
    with pytest.raises(SlimserveError, match="docker-credential-absent-helper, which is not on PATH"):
        _pull(private_ref, isolated)
