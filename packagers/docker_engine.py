"""Build engines: daemonless (the default when no Docker daemon answers) or a Docker daemon, whose build is
saved back into the same OCI layout."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.packagers.oci import layout
from slimserve.packagers.oci.image import (
    Image,
    Platform,
)
from slimserve.packagers.oci.layer import (
    layer_from_blob,
)

Engine = Literal["auto", "none", "docker"]
ENGINES: tuple[Engine, ...] = ("auto", "none", "docker")


# -- engines --------------------------------------------------------------------------------------------
def docker_available() -> bool:
    """Does a Docker daemon answer (and is the SDK installed)? Quick: a ping with a short timeout."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=5)
        return bool(client.ping())
    except Exception:  # noqa: BLE001 -- the SDK raises DockerException, requests and socket errors alike
        return False


def _resolve_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise SlimserveError(f"unknown engine {engine!r}", hint="choose auto, none or docker")
    if engine == "auto":
        return "docker" if docker_available() else "none"
    if engine == "docker" and not docker_available():
        try:
            import docker  # noqa: F401
        except ImportError:
            raise SlimserveError("--engine docker needs the docker Python SDK",
                                 hint="pip install 'slimserve[container]', or use --engine none") from None
        raise ToolError("--engine docker: no Docker daemon answers (DOCKER_HOST or /var/run/docker.sock)",
                        hint="start Docker, or use --engine none to build without a daemon")
    return engine


def _docker_build(stage: Path, platform: Platform, tag: str) -> Image:
    """Build OUT/context with the daemon, then save it into OUT/image (Docker >= 25 saves an OCI layout)."""
    import docker

    client = docker.from_env(timeout=600)
    with tempfile.TemporaryFile() as ctx:
        with tarfile.open(fileobj=ctx, mode="w") as tar:
            tar.add(stage / "context", arcname=".")
            tar.add(stage / "Dockerfile", arcname="Dockerfile")
        ctx.seek(0)
        try:
            built, _ = client.images.build(fileobj=ctx, custom_context=True, tag=tag, platform=str(platform),
                                           rm=True, pull=False)
        except Exception as exc:  # BuildError / APIError carry the daemon's message
            raise ToolError(f"docker build failed: {first_line(exc)}") from exc
    with tempfile.TemporaryDirectory(dir=stage) as tmp:
        archive = Path(tmp) / "image.tar"
        with open(archive, "wb") as fh:
            fh.writelines(built.save(named=True))
        with tarfile.open(archive) as tar:
            tar.extractall(stage / "image", filter="data")
    if not (stage / "image" / "oci-layout").is_file():
        raise ToolError("docker save did not produce an OCI layout (Docker 25 or newer does)",
                        hint="upgrade Docker, or use --engine none")
    index = json.loads((stage / "image" / "index.json").read_text())
    if len(index.get("manifests") or []) != 1:
        raise ToolError("docker save produced more than one manifest")
    image = layout.read(stage / "image", platform)
    measured = tuple(layer_from_blob(lyr.path, lyr.media_type, lyr.digest) for lyr in image.layers)
    return Image(image.config_bytes, measured, image.family, image.annotations)


