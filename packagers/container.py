"""Container images without a daemon (and with one when it answers).

`package_container(bundle, out, target, ...)` writes, atomically:

    OUT/Dockerfile, OUT/context/{runtime,handler,model}/, OUT/context/.dockerignore
        a plain build context for docker/buildah/podman, layers ordered runtime -> handler -> model so a
        new model never rebuilds the runtime layer;
    OUT/image/      an OCI image layout: the base image (pulled over the distribution API, or read from an
                    `oci:PATH` layout) plus three reproducible gzip layers (runtime closure, handler, model);
    OUT/slimserve.json
                    the bundle's manifest extended with a `package` section: base, image digest, each
                    layer's compressed and uncompressed size, the uncompressed image size, push result.

Platforms are data: each profile with a `[packager]` table of artifact "container" says where the files
go, its default base, and how the runtime is driven (`spec_from_profile`). Today:
- aws-lambda-container (Lambda runtime API): everything under LAMBDA_TASK_ROOT (/var/task),
  `CMD ["lambda_handler.handler"]`, the base's ENTRYPOINT (/lambda-entrypoint.sh, with the Runtime
  Interface Emulator) kept: it starts the base's runtime interface client (awslambdaric), which calls the
  handler; slimserve ships no client, and a base without an ENTRYPOINT is refused.
- gcp-cloud-run (HTTP): /app, runtime closure in /app/packages (+ waitress), `python3 /app/http_app.py`
  serving WSGI on $PORT.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from slimserve.atomic import atomic_dir
from slimserve.bundle import ModelBundle
from slimserve.manifest import (
    MANIFEST_NAME,
    Artifact,
    BaseImage,
    ImageFacts,
    PackageSection,
    PushRecord,
    sha256_file,
    write_manifest,
)
from slimserve.measure import PackageSize
from slimserve.packagers.container_image import (
    ROLES,
    _check_base_entrypoint,
    _check_base_python,
    _dockerfile,
    _image_facts,
    _server_site,
    _write_context,
    build_image,
    fetch_base,
    oci_platform,
    recorded_base,
    role_entries,
)
from slimserve.packagers.container_spec import (
    DEFAULT_PLATFORM,
    LAMBDA_HANDLER,
    WAITRESS,
    PlatformSpec,
    default_base,
    platform_spec,
    spec_from_profile,
)
from slimserve.packagers.docker_engine import (
    ENGINES,
    Engine,
    _docker_build,
    _resolve_engine,
    docker_available,
)
from slimserve.packagers.model_check import check_model
from slimserve.packagers.model_files import shipped_manifest
from slimserve.packagers.oci import layout
from slimserve.packagers.oci.digest import Digest
from slimserve.packagers.oci.image import (
    Image,
)
from slimserve.packagers.oci.layer import (
    source_date_epoch,
)
from slimserve.packagers.oci.registry import PulledImage, PushResult, Reference, RegistryClient
from slimserve.packagers.oci.validate import validate_image
from slimserve.packagers.target import Target
from slimserve.progress import NULL_PROGRESS, Progress

__all__ = ["DEFAULT_PLATFORM", "ENGINES", "LAMBDA_HANDLER", "ROLES", "WAITRESS", "ContainerArtifacts", "Engine",
           "PlatformSpec", "_server_site", "build_image", "container_image_size", "default_base", "docker_available",
           "fetch_base", "oci_platform", "package_container", "platform_spec", "recorded_base", "role_entries",
           "spec_from_profile"]


@dataclass(frozen=True)
class ContainerArtifacts:
    """What `package_container` wrote: paths inside OUT, the image value and what it weighs."""

    out: Path
    dockerfile: Path
    context: Path
    image_dir: Path
    manifest_path: Path
    digest: Digest
    image: Image
    base_layers: int
    engine: str
    facts: ImageFacts
    pushed: PushResult | None = None

    @property
    def uncompressed_bytes(self) -> int:
        return self.facts.uncompressed_bytes

    @property
    def compressed_bytes(self) -> int:
        return self.facts.compressed_bytes


# -- the entry points -----------------------------------------------------------------------------------
def package_container(
    bundle: ModelBundle,
    out: Path,
    target: Target,
    base_ref: str | None = None,
    platform: str = DEFAULT_PLATFORM,
    push_ref: str | None = None,
    insecure_registries: Iterable[str] = (),
    engine: str = "auto",
    progress: Progress = NULL_PROGRESS,
    *,
    closure: Path | None = None,
    chunk_size: int | None = None,
    client: RegistryClient | None = None,
) -> ContainerArtifacts:
    """Write OUT (Dockerfile + context, OCI layout, manifest) atomically; push when `push_ref` is given.

    `closure` overrides the runtime closure folder (default: `build_closure(target, bundle.runtime_extra)`).
    A failure at any point (registry, build, push) leaves a previous OUT untouched and no partial one.
    """
    push_to = Reference.parse(push_ref) if push_ref else None  # credentials in it are refused before any work
    spec = platform_spec(platform)
    base_ref = base_ref or default_base(platform, target)
    if not base_ref.startswith("oci:"):
        Reference.parse(base_ref)
    plat = oci_platform(target)
    engine = _resolve_engine(engine)
    client = client or RegistryClient(insecure=frozenset(insecure_registries))
    epoch = source_date_epoch()
    check_model(bundle)
    if closure is None:
        from slimserve.packagers.closure import build_closure

        closure = build_closure(target, bundle.runtime_extra, progress=progress, prefix="/" + spec.packages_dir.strip("/"))
    entries = role_entries(bundle, spec, closure, target, _server_site(target, spec))

    with atomic_dir(Path(out), inputs=[bundle.model_path]) as stage:
        with progress.stage("build context", total=1) as handle:
            _write_context(stage / "context", spec, entries)
            base_workdir = None
            handle.advance()
        base: PulledImage | None = None
        if engine == "none":
            with progress.stage(f"base image {base_ref}", total=1) as handle:
                base = fetch_base(base_ref, plat, client)
                _check_base_python(base.image, target, base_ref)
                _check_base_entrypoint(base.image, spec, base_ref)
                handle.advance()
            base_workdir = (base.image.config.get("config") or {}).get("WorkingDir")
        (stage / "Dockerfile").write_text(_dockerfile(spec, recorded_base(base_ref), plat, base_workdir),
                                          encoding="utf-8")
        if base is not None:
            with progress.stage("image layers", total=1) as handle:
                with tempfile.TemporaryDirectory(dir=stage) as tmp:
                    image = build_image(base.image, entries, spec, target, Path(tmp), epoch)
                    layout.write(image, stage / "image", ref_name="latest")
                image = layout.located(image, stage / "image")
                validate_image(stage / "image", base=base.image)
                handle.advance()
            base_layers = len(base.image.layers)
        else:
            with progress.stage("docker build", total=1) as handle:
                image = _docker_build(stage, plat, tag=f"slimserve-build:{os.getpid()}")
                handle.advance()
            base_layers = len(image.layers) - len(ROLES)
        pushed = None
        if push_to is not None:
            with progress.stage(f"push {push_to}", total=len(image.layers) + 1) as handle:
                mount = base.reference if base is not None and base.reference.registry != "oci" else None
                pushed = client.push(image, push_to, chunk_size=chunk_size, mount_from=mount,
                                     on_blob=lambda d, s: handle.advance())
        facts = _image_facts(image, base_layers)
        package = PackageSection(
            target="container", platform=spec.name, python=target.python, arch=target.arch,
            artifacts=[Artifact(path=p, bytes=(stage / p).stat().st_size, sha256=sha256_file(stage / p))
                       for p in ("Dockerfile",)],
            model_dir=f"{spec.app_dir}/model", engine=engine,
            base=BaseImage(ref=recorded_base(base_ref),
                           manifest_digest=str(base.manifest_digest) if base else None,
                           index_digest=str(base.index_digest) if base and base.index_digest else None,
                           layers=base_layers),
            image=facts,
            push=None if pushed is None else PushRecord(
                ref=str(pushed.reference), digest=str(pushed.digest), uploaded=len(pushed.uploaded),
                mounted=len(pushed.mounted), skipped=len(pushed.skipped)),
        )
        manifest = shipped_manifest(bundle.manifest).packaged(package, handler=spec.handler)
        write_manifest(stage, manifest)
    out = Path(out).absolute()
    image = layout.located(image, out / "image")
    return ContainerArtifacts(out=out, dockerfile=out / "Dockerfile", context=out / "context",
                              image_dir=out / "image", manifest_path=out / MANIFEST_NAME, digest=image.digest,
                              image=image, base_layers=base_layers, engine=engine, pushed=pushed, facts=facts)


def container_image_size(
    bundle: ModelBundle,
    target: Target,
    base_layout_or_ref: str | Path | None = None,
    platform: str = DEFAULT_PLATFORM,
    insecure_registries: Iterable[str] = (),
    *,
    closure: Path | None = None,
    client: RegistryClient | None = None,
) -> PackageSize:
    """What the image would weigh, without writing OUT: `image_bytes` is the uncompressed size Lambda's
    10 GB limit applies to; `parts`/`unzipped_parts` split base, runtime, handler and model.

    `base_layout_or_ref`: an OCI layout folder, `oci:PATH`, or a registry reference (default: the platform's).
    """
    spec = platform_spec(platform)
    ref = str(base_layout_or_ref) if base_layout_or_ref is not None else default_base(platform, target)
    if isinstance(base_layout_or_ref, Path) or (not ref.startswith("oci:") and Path(ref).is_dir()):
        ref = f"oci:{ref}"
    client = client or RegistryClient(insecure=frozenset(insecure_registries))
    check_model(bundle)
    if closure is None:
        from slimserve.packagers.closure import build_closure

        closure = build_closure(target, bundle.runtime_extra, prefix="/" + spec.packages_dir.strip("/"))
    entries = role_entries(bundle, spec, closure, target, _server_site(target, spec))
    base = fetch_base(ref, oci_platform(target), client)
    with tempfile.TemporaryDirectory(prefix="slimserve-image-") as tmp:
        image = build_image(base.image, entries, spec, target, Path(tmp), source_date_epoch())
    n = len(base.image.layers)
    parts = {"base": sum(lyr.size for lyr in image.layers[:n])}
    unzipped = {"base": sum(lyr.uncompressed_size or 0 for lyr in image.layers[:n])}
    for role, lyr in zip(ROLES, image.layers[n:]):
        parts[role] = lyr.size
        unzipped[role] = lyr.uncompressed_size or 0
    total = sum(unzipped.values())
    return PackageSize(unzipped_bytes=total, zipped_bytes=sum(parts.values()), parts=parts,
                       unzipped_parts=unzipped, layers=len(image.layers), image_bytes=total)
