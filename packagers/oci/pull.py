"""Pull one platform's image: image indexes / manifest lists are resolved to the requested platform; blobs
are verified against their digests and cached by digest (`$XDG_CACHE_HOME/slimserve/blobs`), layers
measured once (diff_id and uncompressed size remembered beside the blob)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimserve.errors import SlimserveError, ToolError, first_line

from .digest import Digest
from .image import (
    DOCKER_LAYER_GZIP,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_LAYER_GZIP,
    Image,
    Layer,
    Platform,
    family_of,
)
from .layer import layer_from_blob
from .reference import Reference

if TYPE_CHECKING:
    from .registry import RegistryClient

ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)


@dataclass(frozen=True)


class PulledImage:
    image: Image
    reference: Reference
    manifest_digest: Digest            # digest of the chosen single-platform manifest, as the registry serves it
    index_digest: Digest | None = None  # when the reference named an index


def get_manifest(client: RegistryClient, ref: Reference, identifier: str | None = None) -> tuple[dict[str, Any], Digest, str]:
    ident = identifier or ref.identifier
    resp = client.request("GET", ref, f"/v2/{ref.repository}/manifests/{ident}",
                        scopes=[f"repository:{ref.repository}:pull"], headers={"Accept": ACCEPT})
    if resp.status == 404:
        resp.close()
        raise ToolError(f"image {ref.registry}/{ref.repository}:{ident} not found (404)",
                        hint="check the --base reference (repository and tag)")
    if resp.status != 200:
        raise client._fail(ref, resp, f"fetching the manifest of {ref}")
    data = resp.read()
    resp.close()
    digest = Digest.of_bytes(data)
    if ident.startswith("sha256:") and str(digest) != ident:
        raise ToolError(f"registry {ref.registry} served a manifest whose digest is not {ident}")
    try:
        manifest = json.loads(data)
    except ValueError:
        raise ToolError(f"the manifest of {ref} is not JSON") from None
    media_type = manifest.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0]
    return manifest, digest, media_type


def blob_cache(client: RegistryClient) -> Path:
    if client.cache_dir:
        return Path(client.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slimserve" / "blobs"


def fetch_blob(client: RegistryClient, ref: Reference, digest: Digest) -> Path:
    """The blob as a verified file in the cache (downloaded once per digest)."""
    dest = blob_cache(client) / digest.algorithm / digest.hex
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    resp = client.request("GET", ref, f"/v2/{ref.repository}/blobs/{digest}",
                        scopes=[f"repository:{ref.repository}:pull"])
    if resp.status != 200:
        raise client._fail(ref, resp, f"fetching blob {digest.short}")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as fh:
            while block := resp.raw.read(1 << 20):
                fh.write(block)
        resp.close()
        if Digest.of_file(tmp) != digest:
            raise ToolError(f"blob {digest.short} from {ref.registry} does not match its digest")
        os.replace(tmp, dest)
    except OSError as exc:
        raise ToolError(f"download of blob {digest.short} from {ref.registry} failed: {first_line(exc)}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def pull(client: RegistryClient, ref: Reference, platform: Platform) -> PulledImage:
    """The image for `platform` named by `ref`, with its layers downloaded and measured."""
    manifest, digest, media_type = get_manifest(client, ref)
    index_digest = None
    if media_type in INDEX_TYPES:
        index_digest = digest
        choice = _choose_platform(manifest, platform, ref)
        manifest, digest, media_type = get_manifest(client, ref, choice)
    if media_type not in MANIFEST_TYPES:
        raise ToolError(f"{ref} is a {media_type or 'schema 1'} manifest; slimserve reads OCI and Docker v2 images",
                        hint="choose a base published as an OCI or Docker schema 2 image")
    family = family_of(media_type)
    config_path = fetch_blob(client, ref, Digest.parse(manifest["config"]["digest"]))
    config_bytes = config_path.read_bytes()
    config = json.loads(config_bytes)
    if not platform.matches(config):
        got = f"{config.get('os')}/{config.get('architecture')}"
        raise ToolError(f"base image {ref} is {got}, not {platform}",
                        hint=f"choose a base built for {platform} (or pass --arch to match the base)")
    diff_ids = [Digest.parse(d) for d in (config.get("rootfs") or {}).get("diff_ids") or []]
    descriptors = manifest.get("layers") or []
    if len(diff_ids) != len(descriptors):
        raise ToolError(f"base image {ref} is inconsistent: {len(descriptors)} layers, {len(diff_ids)} diff_ids")
    layers = []
    for desc, diff_id in zip(descriptors, diff_ids):
        if desc.get("mediaType") not in (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP):
            raise ToolError(f"base image {ref} has a {desc.get('mediaType')} layer; slimserve builds on gzip layers",
                            hint="choose a base image whose layers are gzip-compressed tars")
        layer = _measured(fetch_blob(client, ref, Digest.parse(desc["digest"])), desc["mediaType"])
        if layer.diff_id != diff_id:
            raise ToolError(f"base layer {layer.digest.short} does not match its diff_id in the config of {ref}")
        layers.append(layer)
    annotations = tuple(sorted((manifest.get("annotations") or {}).items()))
    image = Image(config_bytes=config_bytes, layers=tuple(layers), family=family, annotations=annotations)
    return PulledImage(image, ref, digest, index_digest)


def _choose_platform(index: dict[str, Any], platform: Platform, ref: Reference) -> str:
    entries = [m for m in index.get("manifests") or [] if m.get("mediaType", "") not in INDEX_TYPES]
    # attestation manifests are listed with platform unknown/unknown: never an image to run
    real = [m for m in entries if (m.get("platform") or {}).get("os") not in (None, "unknown")]
    for m in real:
        if platform.matches(m["platform"]):
            return str(m["digest"])
    have = ", ".join(sorted({f"{m['platform'].get('os')}/{m['platform'].get('architecture')}" for m in real})) or "none"
    raise ToolError(f"base image {ref} has no manifest for {platform} (it has: {have})",
                    hint="choose a base published for your --arch, or pass the --arch the base supports")


def _measured(path: Path, media_type: str) -> Layer:
    """A cached layer blob described with its diff_id and uncompressed size (remembered beside the blob)."""
    meta = path.with_name(path.name + ".json")
    digest = Digest("sha256", path.name)
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        return Layer(digest, Digest.parse(data["diff_id"]), path.stat().st_size, media_type, path,
                     int(data["uncompressed_size"]))
    except (OSError, ValueError, KeyError, SlimserveError):
        pass
    layer = layer_from_blob(path, media_type, digest)
    try:
        meta.write_text(json.dumps({"diff_id": str(layer.diff_id), "uncompressed_size": layer.uncompressed_size}))
    except OSError:
        pass
    return layer
