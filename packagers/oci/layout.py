"""OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/<hex>`): write an Image, read one back.

The layout holds exactly one image manifest (never an index of several platforms): it is what we push
and what `skopeo`/`umoci` read as `oci:DIR`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError

from .digest import Digest
from .image import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, Image, Layer, Platform, family_of

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}


def blob_path(root: Path, digest: Digest) -> Path:
    return root / "blobs" / digest.algorithm / digest.hex


def _put_blob(root: Path, digest: Digest, *, data: bytes | None = None, source: Path | None = None) -> None:
    dest = blob_path(root, digest)
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        dest.write_bytes(data)
        return
    assert source is not None
    try:
        os.link(source, dest)  # same filesystem: no copy of a multi-GB layer
    except OSError:
        shutil.copyfile(source, dest)
    os.chmod(dest, 0o644)


def located(image: Image, root: Path) -> Image:
    """The same image with each layer pointing at its blob in the layout at `root`."""
    return replace(image, layers=tuple(replace(lyr, path=blob_path(root, lyr.digest)) for lyr in image.layers))


def manifest_descriptor(image: Image, ref_name: str | None = None) -> dict[str, Any]:
    platform = image.platform
    descriptor: dict[str, Any] = {
        "mediaType": image.family.manifest,
        "digest": str(image.digest),
        "size": len(image.manifest_bytes()),
        "platform": {"architecture": platform.architecture, "os": platform.os},
    }
    if platform.variant:
        descriptor["platform"]["variant"] = platform.variant
    if ref_name:
        descriptor["annotations"] = {REF_NAME: ref_name}
    return descriptor


def write(image: Image, root: Path, ref_name: str | None = "latest") -> Digest:
    """Write `image` as the only manifest of a layout at `root` (an empty or new folder); return its digest."""
    root.mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        _put_blob(root, layer.digest, source=layer.path)
    _put_blob(root, image.config_digest, data=image.config_bytes)
    _put_blob(root, image.digest, data=image.manifest_bytes())
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [manifest_descriptor(image, ref_name)]}
    (root / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (root / "oci-layout").write_text(json.dumps(LAYOUT_VERSION) + "\n", encoding="utf-8")
    return image.digest


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SlimserveError(f"{what} is missing: {path}", hint="is this an OCI image layout folder?") from None
    except (OSError, ValueError) as exc:
        raise SlimserveError(f"{what} {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SlimserveError(f"{what} {path} is not a JSON object")
    return data


def select_manifest(root: Path, platform: Platform | None = None) -> dict[str, Any]:
    """The descriptor of the image manifest for `platform` (or the only one), following nested indexes."""
    if not (root / "oci-layout").is_file():
        raise SlimserveError(f"{root} is not an OCI image layout (no oci-layout file)")
    candidates: list[dict[str, Any]] = []
    pending = list(_load_json(root / "index.json", "index.json").get("manifests") or [])
    while pending:
        desc = pending.pop(0)
        if desc.get("mediaType") in INDEX_TYPES:
            nested = _load_json(blob_path(root, Digest.parse(desc["digest"])), "nested index")
            pending.extend(nested.get("manifests") or [])
        elif desc.get("mediaType") in MANIFEST_TYPES:
            candidates.append(desc)
    if not candidates:
        raise SlimserveError(f"{root} holds no image manifest")
    if platform is not None:
        with_platform = [d for d in candidates if "platform" in d]
        if with_platform:
            candidates = [d for d in with_platform if platform.matches(d["platform"])]
            if not candidates:
                have = ", ".join(sorted({str(Platform(d['platform'].get('os', '?'), d['platform'].get('architecture', '?'))) for d in with_platform}))
                raise SlimserveError(f"{root} has no image for {platform} (it has: {have})")
    if len(candidates) > 1:
        raise SlimserveError(f"{root} holds {len(candidates)} images; pass a platform to choose one")
    return candidates[0]


def read(root: Path, platform: Platform | None = None) -> Image:
    """The image stored in the layout at `root` (layers point at blobs inside the layout)."""
    root = Path(root)
    desc = select_manifest(root, platform)
    manifest = _load_json(blob_path(root, Digest.parse(desc["digest"])), "image manifest")
    family = family_of(manifest.get("mediaType") or desc["mediaType"])
    config_digest = Digest.parse(manifest["config"]["digest"])
    config_bytes = blob_path(root, config_digest).read_bytes()
    config = json.loads(config_bytes)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(manifest.get("layers") or []):
        raise SlimserveError(f"{root}: config names {len(diff_ids)} diff_ids for {len(manifest.get('layers') or [])} layers")
    layers = tuple(
        Layer(digest=Digest.parse(d["digest"]), diff_id=Digest.parse(diff_id), size=int(d["size"]),
              media_type=d["mediaType"], path=blob_path(root, Digest.parse(d["digest"])))
        for d, diff_id in zip(manifest.get("layers") or [], diff_ids)
    )
    annotations = tuple(sorted((manifest.get("annotations") or {}).items()))
    image = Image(config_bytes=config_bytes, layers=layers, family=family, annotations=annotations)
    if platform is not None and not platform.matches(config):
        raise SlimserveError(f"{root} holds a {image.platform} image, not {platform}")
    return image
