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
  Interface Emulator) kept.
- gcp-cloud-run (HTTP): /app, runtime closure in /app/packages (+ waitress), `python3 /app/http_app.py`
  serving WSGI on $PORT.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slimserve import __version__
from slimserve.atomic import atomic_dir
from slimserve.bundle import ModelBundle
from slimserve.errors import SlimserveError, ToolError, first_line
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
from slimserve.packagers.model_check import check_model
from slimserve.packagers.model_files import model_entries, shipped_manifest
from slimserve.packagers.oci import layout
from slimserve.packagers.oci.digest import Digest
from slimserve.packagers.oci.image import (
    Addendum,
    Image,
    Platform,
    append_layers,
    canonical,
    env_map,
    with_config,
)
from slimserve.packagers.oci.layer import (
    build_layer,
    image_path,
    layer_from_blob,
    source_date_epoch,
    tree_entries,
)
from slimserve.packagers.oci.registry import PulledImage, PushResult, Reference, RegistryClient
from slimserve.packagers.oci.validate import validate_image
from slimserve.packagers.reproducible import Source, is_executable
from slimserve.packagers.target import Target
from slimserve.profiles.loader import packaged_platforms
from slimserve.profiles.schema import Profile
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.runtime import RUNTIME_DIR

Engine = Literal["auto", "none", "docker"]
ENGINES: tuple[Engine, ...] = ("auto", "none", "docker")

# The HTTP server shipped for images served over HTTP: pure Python, no dependencies, a thread pool. Pinned
# like the closure.
WAITRESS = "waitress==3.0.2"
LAMBDA_HANDLER = "lambda_handler.handler"
DEFAULT_PLATFORM = "aws-lambda-container"


@dataclass(frozen=True)
class PlatformSpec:
    """Where a platform's base expects files and what the image runs: one value per platform, made from
    its profile's [packager] table (`platform_spec`)."""

    name: str
    default_base: str
    app_dir: str                 # handler + model/ live here
    packages_dir: str            # the runtime closure (site-packages) goes here
    handler_files: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None  # set only when the base has none
    exposed_ports: tuple[str, ...] = ()
    extra_wheels: tuple[str, ...] = ()
    handler: str | None = None


def spec_from_profile(profile: Profile) -> PlatformSpec:
    """The image a profile's [packager] describes. How the runtime is driven decides what the image runs:
    the Lambda runtime API calls `lambda_handler.handler` (the base's ENTRYPOINT is kept); HTTP runs the
    shipped WSGI app (http_app.py, served by waitress) on $PORT."""
    packager = profile.packager
    if packager is None or packager.artifact != "container":
        raise SlimserveError(f"slimserve cannot build a container image for {profile.name}",
                             hint=f"choose one of {', '.join(packaged_platforms('container'))}")
    app, packages = packager.app_dir.rstrip("/"), packager.packages_dir.rstrip("/")
    if packager.interface == "lambda-runtime-api":
        return PlatformSpec(name=profile.name, default_base=packager.base, app_dir=app, packages_dir=packages,
                            handler_files=("lambda_handler.py", "model_runtime.py"), cmd=(LAMBDA_HANDLER,),
                            handler=LAMBDA_HANDLER)
    return PlatformSpec(
        name=profile.name, default_base=packager.base, app_dir=app, packages_dir=packages,
        handler_files=("http_app.py", "lambda_handler.py", "model_runtime.py"),
        cmd=("python3", f"{app}/http_app.py"),
        env=(("PYTHONPATH", f"{packages}:{app}"), ("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1")),
        working_dir=app, exposed_ports=(f"{packager.port}/tcp",), extra_wheels=(WAITRESS,),
    )


ROLES = ("runtime", "handler", "model")


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
    pushed: PushResult | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def uncompressed_bytes(self) -> int:
        return int(self.facts["uncompressed_bytes"])

    @property
    def compressed_bytes(self) -> int:
        return int(self.facts["compressed_bytes"])


# -- inputs ---------------------------------------------------------------------------------------------
def platform_spec(platform: str) -> PlatformSpec:
    """The container platform's spec from its shipped profile (a name, not a file: `--platform NAME`)."""
    from slimserve.profiles.loader import load_profile

    names = packaged_platforms("container")
    if platform not in names:
        raise SlimserveError(f"unknown container platform {platform!r}", hint=f"choose one of {', '.join(names)}")
    return spec_from_profile(load_profile(platform))


def default_base(platform: str, target: Target) -> str:
    return platform_spec(platform).default_base.format(python=target.python)


def oci_platform(target: Target) -> Platform:
    return Platform.parse(f"linux/{target.arch}")


def role_entries(bundle: ModelBundle, spec: PlatformSpec, closure: Path,
                 extra_sites: Iterable[Path] = ()) -> dict[str, dict[str, Source]]:
    """role -> {path in image: source}. The model folder gets the bundle's files and its manifest."""
    runtime: dict[str, Source] = {}
    for site in (closure, *extra_sites):
        runtime.update(tree_entries(site, spec.packages_dir))
    handler: dict[str, Source] = {}
    for name in spec.handler_files:
        src = RUNTIME_DIR / name
        if not src.is_file():
            raise SlimserveError(f"the shipped runtime file {name} is missing from {RUNTIME_DIR}",
                                 hint="reinstall slimserve")
        handler[image_path(f"{spec.app_dir}/{name}")] = src
    model: dict[str, Source] = {image_path(f"{spec.app_dir}/model/{rel}"): source
                                for rel, source in model_entries(bundle).items()}
    return {"runtime": runtime, "handler": handler, "model": model}


def _server_site(target: Target, spec: PlatformSpec) -> list[Path]:
    """Extra pure-Python wheels a platform serves with (waitress for Cloud Run), unpacked once and cached."""
    if not spec.extra_wheels:
        return []
    from slimserve.packagers.closure import wheel_cache
    from slimserve.packagers.wheels import Pin, download_wheel, unpack_wheel

    sites = []
    for requirement in spec.extra_wheels:
        name, _, version = requirement.partition("==")
        site = wheel_cache().parent / "extra-sites" / f"{name}-{version}"
        if not site.is_dir():
            wheel = download_wheel(Pin(name, version), target, wheel_cache())
            staging = Path(tempfile.mkdtemp(prefix=".site-", dir=site.parent if site.parent.exists() else None))
            unpack_wheel(wheel, staging)
            site.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(staging, site)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
        sites.append(site)
    return sites


# -- base images ----------------------------------------------------------------------------------------
def fetch_base(base_ref: str, platform: Platform, client: RegistryClient) -> PulledImage:
    """The base image for `platform`: `oci:PATH` reads a local layout, anything else goes to its registry."""
    if base_ref.startswith("oci:"):
        path = Path(base_ref[4:])
        desc = layout.select_manifest(path, platform)
        image = layout.read(path, platform)
        measured = tuple(layer_from_blob(lyr.path, lyr.media_type, lyr.digest) for lyr in image.layers)
        for lyr, fresh in zip(image.layers, measured):
            if lyr.diff_id != fresh.diff_id:
                raise SlimserveError(f"base layout {path}: layer {lyr.digest.short} does not match its diff_id")
        image = Image(image.config_bytes, measured, image.family, image.annotations)
        return PulledImage(image, Reference("oci", "local"), Digest.parse(desc["digest"]))
    return client.pull(Reference.parse(base_ref), platform)


def recorded_base(base_ref: str) -> str:
    """The base as written into outputs: a local layout by its folder name (its digest is recorded beside
    it), never the build machine's path; a registry reference as given (it names no host file)."""
    if base_ref.startswith("oci:"):
        return "oci:" + Path(base_ref[4:].rstrip("/")).name
    return base_ref


def _check_base_python(base: Image, target: Target, base_ref: str) -> None:
    env = env_map((base.config.get("config") or {}).get("Env") or [])
    version = env.get("PYTHON_VERSION") or env.get("AWS_EXECUTION_ENV", "").removeprefix("AWS_Lambda_python")
    if version and ".".join(version.split(".")[:2]) != target.python:
        raise SlimserveError(f"base {base_ref} runs Python {version}, but the runtime closure is for {target.python}",
                             hint=f"pass --python {'.'.join(version.split('.')[:2])} or a base with Python {target.python}")


# -- the image ------------------------------------------------------------------------------------------
def build_image(base: Image, entries: Mapping[str, Mapping[str, Source]], spec: PlatformSpec, target: Target,
                workdir: Path, epoch: int) -> Image:
    """Base + runtime, handler and model layers + the platform's config, with canonical timestamps."""
    addenda = []
    for role in ROLES:
        layer = build_layer(entries[role], workdir / f"{role}.tar.gz", epoch=epoch,
                            media_type=base.family.layer_gzip)
        what = {"runtime": f"runtime closure for cp{target.python.replace('.', '')} {target.arch}",
                "handler": "handler", "model": "model"}[role]
        addenda.append(Addendum(layer, created_by=f"slimserve {__version__}: {what} in {spec.app_dir}",
                                comment=f"slimserve.layer={role}"))
    image = append_layers(base, *addenda)
    inner = image.config.get("config") or {}
    env = dict(spec.env)
    base_env = env_map(inner.get("Env") or [])
    if "PYTHONPATH" in env and base_env.get("PYTHONPATH"):
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{base_env['PYTHONPATH']}"
    image = with_config(
        image, env=env, cmd=spec.cmd,
        working_dir=spec.working_dir if spec.working_dir and not inner.get("WorkingDir") else None,
        exposed_ports=spec.exposed_ports,
        labels={"org.opencontainers.image.title": "slimserve model", "dev.slimserve.platform": spec.name,
                "dev.slimserve.version": __version__},
    )
    return canonical(image, epoch)


def _dockerfile(spec: PlatformSpec, base_ref: str, platform: Platform, base_workdir: str | None) -> str:
    lines = [
        f"# Generated by slimserve {__version__}: the same files and layer order as image/ (daemonless build).",
        "#   docker build -f Dockerfile -t IMAGE context     (or: buildah bud / podman build, same arguments)",
        f"FROM --platform={platform} {base_ref}",
    ]
    env = dict(spec.env)
    if env:
        lines.append("ENV " + " ".join(f"{k}={v}" for k, v in env.items()))
    if spec.working_dir and not base_workdir:
        lines.append(f"WORKDIR {spec.working_dir}")
    lines += [
        "# 1. runtime closure: changes only with the target Python/arch and the pinned wheels",
        f"COPY runtime/ {spec.packages_dir}/",
        "# 2. handler",
        f"COPY handler/ {spec.app_dir}/",
        "# 3. model: the only layer rebuilt when the model changes",
        f"COPY model/ {spec.app_dir}/model/",
    ]
    lines += [f"EXPOSE {p.split('/')[0]}" for p in spec.exposed_ports]
    lines.append("CMD " + json.dumps(list(spec.cmd)))
    return "\n".join(lines) + "\n"


def _write_context(context: Path, spec: PlatformSpec, entries: Mapping[str, Mapping[str, Source]]) -> None:
    roots = {"runtime": spec.packages_dir, "handler": spec.app_dir, "model": f"{spec.app_dir}/model"}
    for role in ROLES:
        prefix = roots[role].strip("/") + "/"
        for name, src in entries[role].items():
            dest = context / role / name[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(src, bytes):
                dest.write_bytes(src)
            else:
                shutil.copyfile(src, dest)
            os.chmod(dest, 0o755 if is_executable(name) else 0o644)  # by name, as in the layers: no host mode leaks
    # The context is generated and complete: every file belongs in the image (the closure may ship bytecode
    # on purpose, so *.pyc must not be ignored). Only editor/OS litter is excluded.
    (context / ".dockerignore").write_text("# generated by slimserve: the context holds exactly the image's files\n"
                                           "**/.DS_Store\n**/*.swp\n", encoding="utf-8")


def _layer_facts(image: Image, base_layers: int) -> list[dict[str, Any]]:
    facts = []
    for i, lyr in enumerate(image.layers):
        role = "base" if i < base_layers else ROLES[i - base_layers]
        facts.append({"role": role, "digest": str(lyr.digest), "diff_id": str(lyr.diff_id),
                      "media_type": lyr.media_type, "bytes": lyr.size, "uncompressed_bytes": lyr.uncompressed_size})
    return facts


def _image_facts(image: Image, base_layers: int) -> dict[str, Any]:
    inner = image.config.get("config") or {}
    return {
        "digest": str(image.digest), "media_type": image.family.manifest, "config_digest": str(image.config_digest),
        "platform": str(image.platform), "layout": "image",
        "compressed_bytes": image.compressed_bytes, "uncompressed_bytes": image.uncompressed_bytes,
        "new_layers_bytes": sum(lyr.size for lyr in image.layers[base_layers:]),
        "new_layers_uncompressed_bytes": sum(lyr.uncompressed_size or 0 for lyr in image.layers[base_layers:]),
        "layers": _layer_facts(image, base_layers),
        "entrypoint": inner.get("Entrypoint"), "cmd": inner.get("Cmd"), "working_dir": inner.get("WorkingDir"),
    }


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

    `closure` overrides the runtime closure folder (default: `build_closure(target, bundle.is_text)`).
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

        closure = build_closure(target, bundle.is_text, progress=progress, prefix="/" + spec.packages_dir.strip("/"))
    entries = role_entries(bundle, spec, closure, _server_site(target, spec))

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
            image=ImageFacts.model_validate(facts),
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

        closure = build_closure(target, bundle.is_text, prefix="/" + spec.packages_dir.strip("/"))
    entries = role_entries(bundle, spec, closure, _server_site(target, spec))
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
