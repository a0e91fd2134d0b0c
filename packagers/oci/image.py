"""An image is a value: a config and a tuple of layers. Small functions return new images.

Modelled on go-containerregistry's `pkg/v1`: `append_layers` (mutate.Append), `with_config`
(mutate.Config), `canonical` (mutate.Canonical). Sinks (`layout.write`, `registry.push`) take the value.
Nothing here touches the network; layers point at their compressed blob on disk.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError

from .digest import Digest

# -- media types: two families that must never be mixed in one manifest ------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)


@dataclass(frozen=True)
class Family:
    name: str
    index: str
    manifest: str
    config: str
    layer_gzip: str


OCI = Family("oci", OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
DOCKER = Family("docker", DOCKER_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)


def family_of(manifest_media_type: str) -> Family:
    for fam in (OCI, DOCKER):
        if manifest_media_type in (fam.manifest, fam.index):
            return fam
    raise SlimserveError(f"unsupported manifest media type {manifest_media_type!r}",
                         hint="slimserve reads OCI and Docker v2 schema 2 images")


# -- platforms ------------------------------------------------------------------------------------------
_ARCH_ALIASES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/amd64`, `linux/arm64/v8`, or a bare architecture (`x86_64`, `arm64`) meaning linux."""
        parts = text.strip().split("/")
        if len(parts) == 1:
            parts = ["linux", parts[0]]
        if len(parts) not in (2, 3) or parts[1].lower() not in _ARCH_ALIASES:
            raise SlimserveError(f"unsupported platform {text!r}", hint="use linux/amd64 or linux/arm64")
        return cls(parts[0], _ARCH_ALIASES[parts[1].lower()], parts[2] if len(parts) == 3 else None)

    def matches(self, other: Mapping[str, Any]) -> bool:
        """Does an index entry's `platform` (or a config's os/architecture/variant) describe this platform?"""
        if other.get("os") != self.os or _ARCH_ALIASES.get(str(other.get("architecture")), "") != self.architecture:
            return False
        # arm64 images are published with variant v8 or none; treat both as the same platform.
        theirs = other.get("variant") or ("v8" if self.architecture == "arm64" else None)
        mine = self.variant or ("v8" if self.architecture == "arm64" else None)
        return theirs == mine

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


# -- layers ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """A compressed layer blob on disk, with what a manifest and a config need to know about it."""

    digest: Digest            # sha256 of the compressed blob (what the manifest names)
    diff_id: Digest           # sha256 of the uncompressed tar (what the config's rootfs names)
    size: int                 # compressed bytes
    media_type: str
    path: Path                # the compressed blob
    uncompressed_size: int | None = None

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}


@dataclass(frozen=True)
class Addendum:
    """A layer plus the history entry that explains it (mutate.Addendum)."""

    layer: Layer
    created_by: str
    comment: str | None = None


# -- images ---------------------------------------------------------------------------------------------
def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Image:
    """Config bytes (kept verbatim so an untouched base keeps its config digest) and layers, one family."""

    config_bytes: bytes
    layers: tuple[Layer, ...]
    family: Family = OCI
    annotations: tuple[tuple[str, str], ...] = field(default=())

    @property
    def config(self) -> dict[str, Any]:
        """A fresh parsed copy: mutate it freely and pass it to `replace_config`."""
        data: dict[str, Any] = json.loads(self.config_bytes)
        return data

    @property
    def config_digest(self) -> Digest:
        return Digest.of_bytes(self.config_bytes)

    def manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.family.manifest,
            "config": {"mediaType": self.family.config, "digest": str(self.config_digest),
                       "size": len(self.config_bytes)},
            "layers": [layer.descriptor() for layer in self.layers],
        }
        if self.annotations and self.family is OCI:
            manifest["annotations"] = dict(self.annotations)
        return manifest

    def manifest_bytes(self) -> bytes:
        return _dumps(self.manifest())

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.manifest_bytes())

    @property
    def platform(self) -> Platform:
        cfg = self.config
        return Platform(str(cfg.get("os", "linux")), _ARCH_ALIASES.get(str(cfg.get("architecture")), "?"),
                        cfg.get("variant"))

    @property
    def compressed_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def uncompressed_bytes(self) -> int | None:
        sizes = [layer.uncompressed_size for layer in self.layers]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


def replace_config(image: Image, config: Mapping[str, Any]) -> Image:
    """The image with a new config document (serialised compactly, keys in the given order)."""
    return replace(image, config_bytes=_dumps(dict(config)))


def append_layers(image: Image, *addenda: Addendum) -> Image:
    """A new image with the layers appended, their diff_ids in rootfs and one history entry each.

    Each layer takes the image family's gzip media type: the blob is the same bytes whichever family
    names it, and one manifest must never mix families (registries such as Lambda's reject that).
    """
    if not addenda:
        return image
    cfg = image.config
    rootfs = cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("diff_ids", [])
    history = cfg.setdefault("history", [])
    layers = list(image.layers)
    for add in addenda:
        layer = replace(add.layer, media_type=image.family.layer_gzip)
        layers.append(layer)
        rootfs["diff_ids"].append(str(layer.diff_id))
        entry: dict[str, Any] = {"created_by": add.created_by}
        if add.comment:
            entry["comment"] = add.comment
        history.append(entry)
    return replace(replace_config(image, cfg), layers=tuple(layers))


def with_config(
    image: Image,
    *,
    env: Mapping[str, str] | None = None,
    cmd: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    working_dir: str | None = None,
    labels: Mapping[str, str] | None = None,
    exposed_ports: Sequence[str] | None = None,
) -> Image:
    """The image with its runtime config extended: Env entries updated or added (base ones kept, in order),
    Labels merged, and Cmd/Entrypoint/WorkingDir set only when given. Everything else stays as the base had it.
    """
    cfg = image.config
    inner = cfg.setdefault("config", {})
    if env:
        inner["Env"] = extend_env(inner.get("Env") or [], env)
    if cmd is not None:
        inner["Cmd"] = list(cmd)
    if entrypoint is not None:
        inner["Entrypoint"] = list(entrypoint)
    if working_dir is not None:
        inner["WorkingDir"] = working_dir
    if labels:
        inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    if exposed_ports:
        inner["ExposedPorts"] = {**(inner.get("ExposedPorts") or {}), **{p: {} for p in exposed_ports}}
    return replace_config(image, cfg)


def env_map(env: Sequence[str]) -> dict[str, str]:
    pairs = (item.partition("=") for item in env)
    return {key: value for key, _, value in pairs}


def extend_env(env: Sequence[str], updates: Mapping[str, str]) -> list[str]:
    """`KEY=VALUE` list with `updates` applied in place (order of the base kept, new keys appended)."""
    out: list[str] = []
    seen: set[str] = set()
    for item in env:
        key = item.split("=", 1)[0]
        if key in updates:
            out.append(f"{key}={updates[key]}")
            seen.add(key)
        else:
            out.append(item)
    out.extend(f"{k}={v}" for k, v in updates.items() if k not in seen)
    return out


def iso_time(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(image: Image, epoch: int) -> Image:
    """Fixed timestamps: the config's `created` and every history entry lacking one take `epoch`."""
    cfg = image.config
    when = iso_time(epoch)
    cfg["created"] = when
    for entry in cfg.get("history") or []:
        entry.setdefault("created", when)
    return replace_config(image, cfg)


def convert_family(image: Image, family: Family) -> Image:
    """The same blobs named by another family's media types (only gzip layers can be renamed)."""
    layers = []
    for layer in image.layers:
        if layer.media_type not in (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP):
            raise SlimserveError(f"layer {layer.digest.short} is {layer.media_type}, not a gzip tar")
        layers.append(replace(layer, media_type=family.layer_gzip))
    return replace(image, family=family, layers=tuple(layers))
