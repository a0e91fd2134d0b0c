"""`validate_image`: the oracle every container test uses, for what Lambda rejects and local tools accept.

Checks, each with its own message:
- the layout names exactly one single-platform image manifest (no index, no attestation manifests);
- blobs exist and match their digests and sizes;
- manifest, config and layer media types belong to one family (OCI or Docker v2), layers are gzip;
- `rootfs.diff_ids` are the sha256 of each uncompressed tar;
- one history entry per layer (entries without `empty_layer`);
- every layer tar carries an entry for each parent directory of what it holds;
- against a base: its layers, diff_ids and history come first, and `Env`, `Cmd`, `Entrypoint`, `WorkingDir`
  and the other runtime settings are kept (extended, never dropped).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError

from . import layout
from .digest import Digest
from .image import INDEX_TYPES, MANIFEST_TYPES, Family, Image, env_map, family_of

_GZIP_MAGIC = b"\x1f\x8b"


class _Hashing:
    """File-like wrapper that hashes what tarfile reads from the gunzipped stream."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.raw.read(n)
        self.sha.update(data)
        return data


def _layer_problems(index: int, path: Path, diff_id: str) -> list[str]:
    problems: list[str] = []
    with open(path, "rb") as fh:
        if fh.read(2) != _GZIP_MAGIC:
            return [f"layer {index} is not gzip-compressed"]
    names: list[str] = []
    try:
        with gzip.open(path, "rb") as gz:
            stream = _Hashing(gz)
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    names.append(member.name)
            while stream.read(1 << 20):  # the tar end blocks and any padding count for the diff_id
                pass
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        return [f"layer {index} is not a readable gzip tar: {exc}"]
    if f"sha256:{stream.sha.hexdigest()}" != diff_id:
        problems.append(f"layer {index}: diff_id {diff_id[:19]}… is not the sha256 of its uncompressed tar "
                        f"(sha256:{stream.sha.hexdigest()[:12]}…)")
    normalised = {n.strip("/").removeprefix("./").strip("/") for n in names} - {"", "."}
    missing = sorted({
        "/".join(parts[:i])
        for name in normalised
        for parts in [name.split("/")]
        for i in range(1, len(parts))
        if "/".join(parts[:i]) not in normalised
    })
    if missing:
        problems.append(f"layer {index} has no entry for parent director{'ies' if len(missing) > 1 else 'y'} "
                        f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
    return problems


def _base_problems(image: Image, base: Image) -> list[str]:
    problems: list[str] = []
    n = len(base.layers)
    if [layer.digest for layer in image.layers[:n]] != [layer.digest for layer in base.layers]:
        problems.append("the base image's layers are not the first layers of the image")
    cfg, base_cfg = image.config, base.config
    if (cfg.get("rootfs") or {}).get("diff_ids", [])[:n] != (base_cfg.get("rootfs") or {}).get("diff_ids", []):
        problems.append("the base image's diff_ids are not the first diff_ids of the image")
    base_history = base_cfg.get("history") or []
    if (cfg.get("history") or [])[: len(base_history)] != base_history:
        problems.append("the base image's history is not kept at the start of the image's history")
    inner, base_inner = cfg.get("config") or {}, base_cfg.get("config") or {}
    env, base_env = env_map(inner.get("Env") or []), env_map(base_inner.get("Env") or [])
    for key, value in base_env.items():
        if key not in env:
            problems.append(f"Env {key} of the base was dropped")
        elif key.endswith("PATH") and value and not set(value.split(":")) <= set(env[key].split(":")):
            problems.append(f"Env {key} replaces the base's value instead of extending it")
    if base_inner.get("WorkingDir") and inner.get("WorkingDir") != base_inner["WorkingDir"]:
        problems.append(f"WorkingDir {inner.get('WorkingDir')!r} replaces the base's {base_inner['WorkingDir']!r}")
    if base_inner.get("Entrypoint") and inner.get("Entrypoint") != base_inner["Entrypoint"]:
        problems.append("Entrypoint of the base was replaced or dropped")
    if (base_inner.get("Cmd") or base_inner.get("Entrypoint")) and not (inner.get("Cmd") or inner.get("Entrypoint")):
        problems.append("the image has no Cmd/Entrypoint although the base had one")
    for key in base_inner:
        if key not in inner:
            problems.append(f"config.{key} of the base was dropped")
    for key in ("architecture", "os"):
        if cfg.get(key) != base_cfg.get(key):
            problems.append(f"{key} {cfg.get(key)!r} differs from the base's {base_cfg.get(key)!r}")
    return problems


def image_problems(layout_dir: Path, base: Image | Path | None = None) -> list[str]:
    """Everything wrong with the image in `layout_dir`, one sentence each (empty when it is valid)."""
    root = Path(layout_dir)
    try:
        index = json.loads((root / "index.json").read_bytes())
        if not (root / "oci-layout").is_file():
            return [f"{root} has no oci-layout file"]
    except (OSError, ValueError) as exc:
        return [f"{root} is not an OCI layout: {exc}"]
    entries = index.get("manifests") or []
    if len(entries) != 1:
        return [f"index.json names {len(entries)} manifests; a deployable image has exactly one"]
    desc = entries[0]
    if desc.get("mediaType") in INDEX_TYPES:
        return ["the image is an image index (multi-platform or with attestations), not a single-platform manifest"]
    if desc.get("mediaType") not in MANIFEST_TYPES:
        return [f"index.json names a {desc.get('mediaType')!r}, not an image manifest"]

    problems: list[str] = []

    def blob(d: dict[str, Any], what: str) -> Path | None:
        try:
            digest = Digest.parse(d["digest"])
        except (KeyError, SlimserveError):
            problems.append(f"{what} has no valid digest")
            return None
        path = layout.blob_path(root, digest)
        if not path.is_file():
            problems.append(f"{what} blob {digest.short} is missing")
            return None
        if Digest.of_file(path) != digest:
            problems.append(f"{what} blob {digest.short} does not match its digest")
        if path.stat().st_size != d.get("size"):
            problems.append(f"{what} size {d.get('size')} is not the blob's {path.stat().st_size} bytes")
        return path

    manifest_path = blob(desc, "manifest")
    if manifest_path is None:
        return problems
    manifest = json.loads(manifest_path.read_bytes())
    media_type = manifest.get("mediaType") or desc["mediaType"]
    if media_type != desc["mediaType"]:
        problems.append(f"manifest says {media_type} but index.json says {desc['mediaType']}")
    family: Family = family_of(media_type)
    config_desc = manifest.get("config") or {}
    if config_desc.get("mediaType") != family.config:
        problems.append(f"config media type {config_desc.get('mediaType')} is not {family.name}'s {family.config}")
    config_path = blob(config_desc, "config")
    config = json.loads(config_path.read_bytes()) if config_path else {}
    layers = manifest.get("layers") or []
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if config and len(diff_ids) != len(layers):
        problems.append(f"config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
    for i, ldesc in enumerate(layers):
        if ldesc.get("mediaType") != family.layer_gzip:
            problems.append(f"layer {i} media type {ldesc.get('mediaType')} is not {family.name}'s gzip layer "
                            f"type {family.layer_gzip}")
        path = blob(ldesc, f"layer {i}")
        if path is not None and i < len(diff_ids):
            problems.extend(_layer_problems(i, path, diff_ids[i]))
    if config:
        for key in ("architecture", "os"):
            if not config.get(key):
                problems.append(f"config has no {key}")
        history = config.get("history")
        if history is not None:
            real = [h for h in history if not h.get("empty_layer")]
            if len(real) != len(layers):
                problems.append(f"history has {len(real)} non-empty entries for {len(layers)} layers")
        elif layers:
            problems.append("config has no history")
    if not problems and base is not None:
        base_image = base if isinstance(base, Image) else layout.read(Path(base))
        problems.extend(_base_problems(layout.read(root), base_image))
    return problems


def validate_image(layout_dir: Path, base: Image | Path | None = None) -> Image:
    """The image in `layout_dir` if it is valid (see module doc); otherwise a SlimserveError listing each problem."""
    problems = image_problems(layout_dir, base)
    if problems:
        raise SlimserveError(f"invalid image in {layout_dir}: " + "; ".join(problems))
    return layout.read(Path(layout_dir))
