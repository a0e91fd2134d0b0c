"""The image itself, as values and small functions: the files of each layer (runtime closure, handler,
model), the base image (pulled, or read from an `oci:` layout), the new layers and config on top of it, the
equivalent Dockerfile and build context, and the facts recorded about the result."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from slimserve import __version__
from slimserve.bundle import ModelBundle
from slimserve.errors import SlimserveError, ToolError
from slimserve.manifest import ImageFacts, ImageLayer
from slimserve.packagers.container_spec import PlatformSpec
from slimserve.packagers.handler_code import handler_entries
from slimserve.packagers.model_files import model_entries
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
    tree_entries,
)
from slimserve.packagers.oci.registry import PulledImage, Reference, RegistryClient
from slimserve.packagers.reproducible import Source, is_executable
from slimserve.packagers.target import Target

ROLES = ("runtime", "handler", "model")


def oci_platform(target: Target) -> Platform:
    return Platform.parse(f"linux/{target.arch}")


def role_entries(bundle: ModelBundle, spec: PlatformSpec, closure: Path, target: Target,
                 extra_sites: Iterable[Path] = ()) -> dict[str, dict[str, Source]]:
    """role -> {path in image: source}. The model folder gets the bundle's files and its manifest; the
    handler its bytecode for `target`'s interpreter (packagers/handler_code.py)."""
    runtime: dict[str, Source] = {}
    for site in (closure, *extra_sites):
        runtime.update(tree_entries(site, spec.packages_dir))
    handler: dict[str, Source] = {image_path(f"{spec.app_dir}/{name}"): src for name, src in
                                  handler_entries(spec.handler_files, target, spec.app_dir).items()}
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


def _check_base_entrypoint(base: Image, spec: PlatformSpec, base_ref: str) -> None:
    """A Lambda runtime-API image runs CMD (the handler name) through the base's ENTRYPOINT, which starts the
    runtime interface client (awslambdaric in AWS's base images); slimserve ships no client of its own. A base
    without an ENTRYPOINT would build, push and then fail on Lambda, so it is refused here."""
    if spec.handler is None:
        return
    if not (base.config.get("config") or {}).get("Entrypoint"):
        raise SlimserveError(f"base {base_ref} has no ENTRYPOINT to start Lambda's runtime interface client",
                             hint="use an AWS Lambda base image (public.ecr.aws/lambda/python:X.Y), or a base "
                                  "whose ENTRYPOINT is `python -m awslambdaric`")


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


def _layer_facts(image: Image, base_layers: int) -> list[ImageLayer]:
    return [ImageLayer(role="base" if i < base_layers else ROLES[i - base_layers], digest=str(lyr.digest),
                       diff_id=str(lyr.diff_id), media_type=lyr.media_type, bytes=lyr.size,
                       uncompressed_bytes=lyr.uncompressed_size)
            for i, lyr in enumerate(image.layers)]


def _image_facts(image: Image, base_layers: int) -> ImageFacts:
    """What the manifest records of the image: digests, sizes (all layers, and the ones slimserve added),
    each layer's role, and the command it runs."""
    inner = image.config.get("config") or {}
    if image.uncompressed_bytes is None:  # every layer here was measured (build_layer, layer_from_blob)
        raise ToolError(f"the uncompressed size of image {image.digest.short} is unknown: a layer was not measured")
    return ImageFacts(
        digest=str(image.digest), media_type=image.family.manifest, config_digest=str(image.config_digest),
        platform=str(image.platform), layout="image",
        compressed_bytes=image.compressed_bytes, uncompressed_bytes=image.uncompressed_bytes,
        new_layers_bytes=sum(lyr.size for lyr in image.layers[base_layers:]),
        new_layers_uncompressed_bytes=sum(lyr.uncompressed_size or 0 for lyr in image.layers[base_layers:]),
        layers=_layer_facts(image, base_layers),
        entrypoint=inner.get("Entrypoint"), cmd=inner.get("Cmd"), working_dir=inner.get("WorkingDir"),
    )


