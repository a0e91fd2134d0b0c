"""Registry and base-image fixtures for the container tests (imported by tests/test_oci_*.py).

- `registry`: a real `docker-registry` (Debian package) on 127.0.0.1 at a free port, plain HTTP, with its
  access log kept so tests can count requests; started once per session and stopped at the end.
- `auth_registry`: the same with htpasswd (bcrypt) basic auth, for 401 and credential tests.
- `make_base_layout`: a tiny base image written as an OCI layout (a rootfs with /etc/os-release and a
  few folders, Env/WorkingDir/Entrypoint/Cmd like the Lambda base) in either media-type family.
No test needs the internet.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from slimserve.packagers.oci import layout
from slimserve.packagers.oci.digest import Digest
from slimserve.packagers.oci.image import (
    DOCKER,
    OCI,
    OCI_INDEX,
    Addendum,
    Family,
    Image,
    append_layers,
    canonical,
)
from slimserve.packagers.oci.layer import build_layer
from tests.conftest import require

REGISTRY_BIN = shutil.which("docker-registry")
def _needs(absent: bool, reason: str) -> pytest.MarkDecorator:
    """Skip visibly on a laptop without the tool; in CI (`make test` installs it) run, and fail, instead."""
    return pytest.mark.skipif(absent and not os.environ.get("CI"), reason=reason)


needs_registry = _needs(REGISTRY_BIN is None, "docker-registry (Debian package) not installed")
needs_skopeo = _needs(shutil.which("skopeo") is None, "skopeo not installed")
needs_umoci = _needs(shutil.which("umoci") is None, "umoci not installed")

USER, PASSWORD = "slim", "serve-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str          # 127.0.0.1:PORT
    log: Path
    process: subprocess.Popen[bytes]

    def requests(self, method: str, contains: str = "") -> list[str]:
        """Access-log lines for `method` whose URI contains `contains` (Apache common log format)."""
        return [line for line in self.log.read_text(errors="replace").splitlines()
                if f'"{method} /v2/' in line and contains in line]


@contextlib.contextmanager
def run_registry(root: Path, htpasswd: Path | None = None) -> Iterator[Registry]:
    assert REGISTRY_BIN is not None
    port = free_port()
    config = [
        "version: 0.1",
        "log: {level: info, formatter: text, accesslog: {disabled: false}}",
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}",
        f"http: {{addr: 127.0.0.1:{port}}}",
    ]
    if htpasswd is not None:
        config.append(f"auth: {{htpasswd: {{realm: slimserve-test, path: {htpasswd}}}}}")
    (root / "config.yml").write_text("\n".join(config) + "\n")
    log = root / "registry.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:  # 401 with auth enabled: it is up
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {log.read_text()[-500:]}") from None
                time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def missing(what: str) -> None:
    """A missing registry tool is a failure naming it (`make test` installs them all)."""
    require(False, what)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if REGISTRY_BIN is None:
        missing("docker-registry (Debian package) not installed")
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if REGISTRY_BIN is None or shutil.which("htpasswd") is None:
        missing("docker-registry and htpasswd (apache2-utils) are needed")
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True).stdout
    htpasswd.write_text(line.strip() + "\n")
    with run_registry(root, htpasswd) as reg:
        yield reg


def docker_config(folder: Path, host: str, user: str = USER, password: str = PASSWORD) -> Path:
    """A Docker config folder with `auths` for `host` (point DOCKER_CONFIG at it)."""
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder


# -- base images ----------------------------------------------------------------------------------------
BASE_ENV = ["PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin", "LANG=en_US.UTF-8",
            "LAMBDA_TASK_ROOT=/var/task", "LAMBDA_RUNTIME_DIR=/var/runtime"]


def base_image(work: Path, *, arch: str = "amd64", family: Family = OCI, tag: str = "1") -> Image:
    """A two-layer base like the Lambda one (rootfs, then an empty /var/task), with config and history."""
    config = {
        "architecture": arch, "os": "linux",
        "config": {"Env": list(BASE_ENV), "WorkingDir": "/var/task", "Entrypoint": ["/lambda-entrypoint.sh"],
                   "Cmd": ["app.handler"], "Labels": {"base": "slimserve-test"}},
        "rootfs": {"type": "layers", "diff_ids": []}, "history": [],
    }
    image = Image(json.dumps(config).encode(), (), family)
    rootfs = build_layer({
        "etc/os-release": f'NAME="slimserve test base"\nID=slimtest\nVERSION_ID="{tag}"\n'.encode(),
        "lambda-entrypoint.sh": b"#!/bin/sh\nexec \"$@\"\n",
        "var/runtime/bootstrap.py": b"# stand-in for the Lambda runtime interface client\n",
        "usr/local/bin/README": b"the real base carries python here\n",
    }, work / f"base-rootfs-{arch}-{tag}.tar.gz", epoch=0)
    task = build_layer({"var/task/.keep": b""}, work / f"base-task-{arch}-{tag}.tar.gz", epoch=0)
    image = append_layers(image, Addendum(rootfs, "ADD rootfs.tar /"), Addendum(task, "WORKDIR /var/task"))
    return canonical(image, 0)


def make_base_layout(root: Path, **kwargs: object) -> Path:
    work = root.parent / f".{root.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    layout.write(base_image(work, **kwargs), root)  # type: ignore[arg-type]
    return root


def make_index_layout(root: Path, archs: Sequence[str], family: Family = OCI) -> Path:
    """A multi-platform layout: an index naming one manifest per arch (plus an attestation-like entry)."""
    work = root.parent / f".{root.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    descriptors = []
    for arch in archs:
        image = base_image(work, arch=arch, family=family)
        layout.write(image, root)
        descriptors.append(layout.manifest_descriptor(image))
    nested = json.dumps({"schemaVersion": 2, "mediaType": family.index, "manifests": descriptors}).encode()
    digest = Digest.of_bytes(nested)
    layout.blob_path(root, digest).write_bytes(nested)
    top = {"schemaVersion": 2, "mediaType": OCI_INDEX,
           "manifests": [{"mediaType": family.index, "digest": str(digest), "size": len(nested)}]}
    (root / "index.json").write_text(json.dumps(top))
    return root


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=False)


def push_layout(layout_dir: Path, dest: str, *, all_platforms: bool = False) -> None:
    """Copy a layout to a registry with skopeo (the independent tool, not our client)."""
    args = ["copy", "--dest-tls-verify=false", "--insecure-policy"]
    if all_platforms:
        args.append("--all")
    proc = skopeo(*args, f"oci:{layout_dir}", f"docker://{dest}")
    assert proc.returncode == 0, proc.stderr


__all__ = [
    "DOCKER",
    "OCI",
    "Registry",
    "auth_registry",
    "base_image",
    "docker_config",
    "make_base_layout",
    "make_index_layout",
    "missing",
    "needs_registry",
    "needs_skopeo",
    "needs_umoci",
    "push_layout",
    "registry",
    "skopeo",
]
