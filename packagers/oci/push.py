"""Push an image: blobs the registry already has (HEAD) are skipped, same-registry base layers are mounted,
the rest are uploaded monolithically (or in chunks), then the manifest is PUT, so a failure never leaves a tag."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from slimserve.errors import ToolError

from .digest import Digest
from .image import Image
from .reference import Reference

if TYPE_CHECKING:
    from .registry import RegistryClient, _Response


@dataclass(frozen=True)


class PushResult:
    reference: Reference
    digest: Digest
    uploaded: tuple[Digest, ...] = ()
    mounted: tuple[Digest, ...] = ()
    skipped: tuple[Digest, ...] = ()   # already present: not re-sent


def blob_exists(client: RegistryClient, ref: Reference, digest: Digest, scopes: Sequence[str]) -> bool:
    resp = client.request("HEAD", ref, f"/v2/{ref.repository}/blobs/{digest}", scopes=scopes)
    resp.close()
    if resp.status in (200, 404):
        return resp.status == 200
    raise ToolError(f"registry {ref.registry} answered HTTP {resp.status} to a blob check")


def _upload(client: RegistryClient, ref: Reference, digest: Digest, path: Path, size: int, scopes: Sequence[str],
            chunk_size: int | None, mount_from: str | None) -> bool:
    """Upload one blob; True when the registry mounted it from `mount_from` instead."""
    url = f"/v2/{ref.repository}/blobs/uploads/"
    if mount_from:
        url += "?" + urllib.parse.urlencode({"mount": str(digest), "from": mount_from})
    resp = client.request("POST", ref, url, scopes=scopes, headers={"Content-Length": "0"}, body=lambda: b"")
    resp.close()
    if resp.status == 201:
        return True
    if resp.status != 202:
        raise client._fail(ref, resp, f"starting the upload of {digest.short}")
    location = _location(client, ref, resp)
    if chunk_size and size > chunk_size:
        with open(path, "rb") as fh:
            offset = 0
            while chunk := fh.read(chunk_size):
                end = offset + len(chunk) - 1
                resp = client.request("PATCH", ref, location, scopes=scopes, body=lambda c=chunk: c, headers={  # type: ignore[misc]
                    "Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                    "Content-Range": f"{offset}-{end}"})
                resp.close()
                if resp.status != 202:
                    raise client._fail(ref, resp, f"uploading {digest.short} (bytes {offset}-{end})")
                location = _location(client, ref, resp)
                offset = end + 1
        final = _with_query(location, digest)
        resp = client.request("PUT", ref, final, scopes=scopes, headers={"Content-Length": "0"}, body=lambda: b"")
    else:
        with open(path, "rb") as fh:
            def rewind() -> BinaryIO:
                fh.seek(0)
                return fh
            resp = client.request("PUT", ref, _with_query(location, digest), scopes=scopes, body=rewind,
                                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    resp.close()
    if resp.status != 201:
        raise client._fail(ref, resp, f"finishing the upload of {digest.short}")
    return False


def _location(client: RegistryClient, ref: Reference, resp: _Response) -> str:
    location = str(resp.headers.get("Location") or "")
    if not location:
        raise ToolError(f"registry {ref.registry} gave no upload location")
    return urllib.parse.urljoin(client._base(ref) + "/", location)


def _with_query(location: str, digest: Digest) -> str:
    return location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": str(digest)})


def push(client: RegistryClient, image: Image, ref: Reference, *, chunk_size: int | None = None,
         mount_from: Reference | None = None,
         on_blob: Callable[[Digest, str], None] | None = None) -> PushResult:
    """Upload `image` to `ref` (blobs first, the manifest last, so a failure never leaves a tag)."""
    scopes = [f"repository:{ref.repository}:pull,push"]
    mount_repo = None
    if mount_from and mount_from.api_host == ref.api_host and mount_from.repository != ref.repository:
        mount_repo = mount_from.repository
        scopes.append(f"repository:{mount_repo}:pull")
    blobs: list[tuple[Digest, Path | bytes, int]] = [(layer.digest, layer.path, layer.size) for layer in image.layers]
    blobs.append((image.config_digest, image.config_bytes, len(image.config_bytes)))
    uploaded: list[Digest] = []
    mounted: list[Digest] = []
    skipped: list[Digest] = []
    done = 0
    try:
        for digest, source, size in blobs:
            if blob_exists(client, ref, digest, scopes):
                outcome = skipped
            elif isinstance(source, bytes):
                _upload_bytes(client, ref, digest, source, scopes)
                outcome = uploaded
            elif _upload(client, ref, digest, source, size, scopes, chunk_size, mount_repo):
                outcome = mounted
            else:
                outcome = uploaded
            outcome.append(digest)
            done += 1
            if on_blob:
                on_blob(digest, "skipped" if outcome is skipped else "sent")
        body = image.manifest_bytes()
        resp = client.request("PUT", ref, f"/v2/{ref.repository}/manifests/{ref.tag or image.digest}",
                            scopes=scopes, body=lambda: body,
                            headers={"Content-Type": image.family.manifest, "Content-Length": str(len(body))})
        resp.close()
        if resp.status not in (200, 201):
            raise client._fail(ref, resp, "putting the manifest")
    except ToolError as exc:
        raise ToolError(f"push to {ref} failed after {done} of {len(blobs)} blobs: {exc.message}",
                        hint="nothing was tagged; rerun to resume (blobs already sent are skipped)") from exc
    served = resp.headers.get("Docker-Content-Digest")
    if served and served != str(image.digest):
        raise ToolError(f"registry {ref.registry} stored the manifest as {served}, not {image.digest}")
    return PushResult(ref, image.digest, tuple(uploaded), tuple(mounted), tuple(skipped))


def _upload_bytes(client: RegistryClient, ref: Reference, digest: Digest, data: bytes, scopes: Sequence[str]) -> None:
    resp = client.request("POST", ref, f"/v2/{ref.repository}/blobs/uploads/", scopes=scopes,
                        headers={"Content-Length": "0"}, body=lambda: b"")
    resp.close()
    if resp.status != 202:
        raise client._fail(ref, resp, f"starting the upload of {digest.short}")
    resp = client.request("PUT", ref, _with_query(_location(client, ref, resp), digest), scopes=scopes,
                        body=lambda: data, headers={"Content-Type": "application/octet-stream",
                                                    "Content-Length": str(len(data))})
    resp.close()
    if resp.status != 201:
        raise client._fail(ref, resp, f"finishing the upload of {digest.short}")
