"""A small OCI distribution API client (stdlib urllib): pull one platform's image, push an image.

- References: `[host[:port]/]repo[:tag][@sha256:...]`; no host means Docker Hub (`library/` for one-word names).
- Transport: https always, plain http only for hosts the caller lists as insecure (`--insecure-registry`).
- Auth: anonymous first; on a 401 challenge, a bearer token from the realm (with basic credentials when
  some are stored) or basic auth. Credentials are looked up where crane, skopeo, podman and docker keep
  them, first match wins: `$REGISTRY_AUTH_FILE` (skopeo/podman's auth.json), the Docker config
  (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), then podman's defaults
  (`$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`). In each file:
  `credHelpers[host]`, else `auths[host]` (`auth` = base64 user:password, or `username`/`password`), else
  `credsStore`; a helper is run as `docker-credential-<name> get`, as docker does. Credentials inside a
  reference (`user:pass@host/repo`) are refused, and never echoed: they would end up in shell history,
  logs and error lines.
- Pull: image indexes / manifest lists are resolved to the requested platform; blobs are verified
  against their digests and cached by digest (`$XDG_CACHE_HOME/slimserve/blobs`).
- Push: blobs the registry already has (HEAD) are skipped, same-registry base layers are mounted, the
  rest are uploaded monolithically (or in chunks), then the manifest is PUT.

Every failure is one line in a `ToolError`: unreachable registry, 401/403, unknown image, wrong
architecture, no matching platform in an index, a push failing halfway.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
USER_AGENT = "slimserve-oci/1"


# -- references -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    registry: str          # host[:port] as written ("docker.io" for Docker Hub)
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        text = text.strip()
        _refuse_credentials(text)
        host, _, rest = text.partition("/")
        if rest and ("." in host or ":" in host or host == "localhost"):
            registry, remainder = host, rest
        else:
            registry, remainder = DOCKER_HUB, text
        name, _, digest = remainder.partition("@")
        repo, tag = name, None
        if ":" in name.rsplit("/", 1)[-1]:
            repo, tag = name.rsplit(":", 1)
        if not repo or not re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*", repo):
            raise SlimserveError(f"not a valid image reference: {text!r}",
                                 hint="use HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], e.g. docker.io/library/python:3.12-slim")
        if registry in (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API):
            registry = DOCKER_HUB
            if "/" not in repo:
                repo = f"library/{repo}"
        if tag is None and not digest:
            tag = "latest"
        return cls(registry, repo, tag, Digest.parse(digest) if digest else None)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def identifier(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        return str(self.digest) if self.digest else str(self.tag)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


_DIGEST_SUFFIX = re.compile(r"@[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]+$")


def _refuse_credentials(text: str) -> None:
    """`user:password@host/repo` (or any `@` outside a trailing `@sha256:...`): refused, never echoed."""
    if "://" in text:
        raise SlimserveError("an image reference has no URL scheme: write HOST[:PORT]/REPO[:TAG]",
                             hint="drop the http:// or https:// prefix (use --insecure-registry for plain HTTP)")
    name = _DIGEST_SUFFIX.sub("", text)
    if "@" in name:  # nothing of the reference is echoed: which side of the `@` is the secret is a guess
        raise SlimserveError("image references cannot carry credentials (an `@` outside a trailing "
                             "@sha256:<digest>); the reference is not repeated here",
                             hint="log in instead (`docker login HOST` or `skopeo login HOST`); see the "
                                  "README's registry credentials section")


# -- credentials: Docker config, skopeo/podman auth.json, credential helpers -----------------------------
def _normalise_host(key: str) -> str:
    host = re.sub(r"^https?://", "", key).split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", DOCKER_HUB_API, DOCKER_HUB) else host


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def auth_files() -> list[Path]:
    """The credential files consulted, in order (see the module docstring)."""
    files = [Path(os.environ["REGISTRY_AUTH_FILE"])] if os.environ.get("REGISTRY_AUTH_FILE") else []
    files.append(docker_config_path())
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    files.append(Path.home() / ".config" / "containers" / "auth.json")
    return files


def basic_credentials(registry: str, config_path: Path | None = None) -> tuple[str, str] | None:
    """(user, password) for `registry` from the first credential file that has them, or None.

    `config_path` names one file to read instead of the usual places (tests, `RegistryClient(config_path=)`).
    """
    for path in [config_path] if config_path else auth_files():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise SlimserveError(f"cannot read registry credentials from {path}: {first_line(exc)}") from None
        if not isinstance(data, dict):
            raise SlimserveError(f"{path} is not a Docker config or auth.json (not a JSON object)")
        found = _file_credentials(data, registry, path)
        if found is not None:
            return found
    return None


def _file_credentials(data: dict[str, Any], registry: str, path: Path) -> tuple[str, str] | None:
    """One file's answer, in docker's order: a per-host helper, an `auths` entry, the default store."""
    host = _normalise_host(registry)
    helpers = data.get("credHelpers") or {}
    for key, helper in helpers.items() if isinstance(helpers, dict) else ():
        if _normalise_host(key) == host:
            return _run_helper(str(helper), key, path)
    auths = data.get("auths") or {}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if _normalise_host(key) != host or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise SlimserveError(f"{path}: the `auth` entry for {key} is not base64 user:password") from None
            return user, password
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        return _run_helper(store, "https://index.docker.io/v1/" if host == DOCKER_HUB else registry, path)
    return None


def _run_helper(name: str, server: str, config: Path) -> tuple[str, str] | None:
    """`docker-credential-<name> get` with the server on stdin (the docker credential helper protocol)."""
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        raise SlimserveError(f"{config} says to get credentials for {server} from docker-credential-{name}, "
                             "which is not on PATH", hint=f"install docker-credential-{name}, or edit {config}")
    try:
        proc = subprocess.run([exe, "get"], input=server, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"credential helper docker-credential-{name} failed: {first_line(exc)}") from None
    if proc.returncode != 0:
        if "not found" in (proc.stdout + proc.stderr).lower():  # the helpers' "credentials not found ..."
            return None
        raise ToolError(f"credential helper docker-credential-{name} failed for {server} "
                        f"(exit {proc.returncode}): {first_line(proc.stderr or proc.stdout)}")
    try:
        answer = json.loads(proc.stdout)
        user, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise ToolError(f"credential helper docker-credential-{name} answered something other than "
                        "{\"Username\", \"Secret\"} JSON") from None
    if user == "<token>":
        raise SlimserveError(f"docker-credential-{name} holds an identity token for {server}, which slimserve "
                             "does not exchange", hint="log in with a username and password or access token")
    return user, secret


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', params)}


# -- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PulledImage:
    image: Image
    reference: Reference
    manifest_digest: Digest            # digest of the chosen single-platform manifest, as the registry serves it
    index_digest: Digest | None = None  # when the reference named an index


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: Digest
    uploaded: tuple[Digest, ...] = ()
    mounted: tuple[Digest, ...] = ()
    skipped: tuple[Digest, ...] = ()   # already present: not re-sent


@dataclass
class _Response:
    status: int
    headers: Any
    raw: Any

    def read(self) -> bytes:
        data: bytes = self.raw.read()
        return data

    def close(self) -> None:
        self.raw.close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects only for GET/HEAD (blob storage); uploads must see the registry's answer."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if req.get_method() not in ("GET", "HEAD"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# -- the client -----------------------------------------------------------------------------------------
@dataclass
class RegistryClient:
    insecure: frozenset[str] = frozenset()
    config_path: Path | None = None
    timeout: float = 60.0
    cache_dir: Path | None = None
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    _credentials: dict[str, tuple[str, str] | None] = field(default_factory=dict)  # a helper runs once per host
    _opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(
            context=ssl.create_default_context())))

    # -- transport ------------------------------------------------------------------------------------
    def _base(self, ref: Reference) -> str:
        scheme = "http" if ref.registry in self.insecure or ref.api_host in self.insecure else "https"
        return f"{scheme}://{ref.api_host}"

    def _open(self, req: urllib.request.Request, ref: Reference) -> _Response:
        try:
            raw = self._opener.open(req, timeout=self.timeout)
            return _Response(raw.status, raw.headers, raw)
        except urllib.error.HTTPError as exc:
            return _Response(exc.code, exc.headers, exc)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            hint = "check the registry name and your network"
            if isinstance(reason, ssl.SSLError) or "SSL" in str(reason):
                hint = f"if {ref.registry} serves plain HTTP, pass --insecure-registry {ref.registry}"
            raise ToolError(f"cannot reach registry {ref.registry}: {first_line(reason) if isinstance(reason, BaseException) else reason}",
                            hint=hint) from exc

    def request(
        self,
        method: str,
        ref: Reference,
        url: str,
        *,
        scopes: Sequence[str],
        headers: dict[str, str] | None = None,
        body: Callable[[], bytes | BinaryIO | None] | None = None,
    ) -> _Response:
        """One HTTP exchange with the registry, answering one auth challenge if it comes."""
        if url.startswith("/"):
            url = self._base(ref) + url
        scope_key = " ".join(scopes)

        def attempt() -> _Response:
            req = urllib.request.Request(url, data=body() if body else None, method=method)
            req.add_header("User-Agent", USER_AGENT)
            for k, v in (headers or {}).items():
                req.add_header(k, v)
            token = self._tokens.get((ref.api_host, scope_key))
            if token:
                req.add_unredirected_header("Authorization", token)  # never forwarded to blob storage
            return self._open(req, ref)

        resp = attempt()
        if resp.status != 401:
            return resp
        challenge = resp.headers.get("WWW-Authenticate", "")
        resp.close()
        if not challenge:
            raise self._unauthorized(ref)
        self._tokens[(ref.api_host, scope_key)] = self._authorize(ref, challenge, scopes)
        resp = attempt()
        if resp.status == 401:
            resp.close()
            raise self._unauthorized(ref)
        return resp

    def credentials(self, ref: Reference) -> tuple[str, str] | None:
        if ref.registry not in self._credentials:
            self._credentials[ref.registry] = basic_credentials(ref.registry, self.config_path)
        return self._credentials[ref.registry]

    def _unauthorized(self, ref: Reference) -> ToolError:
        have = self.credentials(ref) is not None
        return ToolError(
            f"registry {ref.registry} answered 401 unauthorized for {ref.repository}"
            + (" (the stored credentials were refused)" if have else " (no credentials stored for it)"),
            hint=f"run `docker login {ref.registry}` or `skopeo login {ref.registry}` (slimserve reads "
                 "$REGISTRY_AUTH_FILE, the Docker config with its credential helpers, and podman's auth.json)",
        )

    def _authorize(self, ref: Reference, challenge: str, scopes: Sequence[str]) -> str:
        scheme, params = _parse_challenge(challenge)
        creds = self.credentials(ref)
        basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
        if scheme == "basic":
            if not basic:
                raise self._unauthorized(ref)
            return basic
        if scheme != "bearer" or "realm" not in params:
            raise ToolError(f"registry {ref.registry} asks for unsupported authentication: {challenge[:80]}")
        query = [("service", params["service"])] if "service" in params else []
        query += [("scope", s) for s in scopes]
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if basic:
            req.add_unredirected_header("Authorization", basic)
        resp = self._open(req, ref)
        try:
            if resp.status in (401, 403):
                raise self._unauthorized(ref)
            if resp.status != 200:
                raise ToolError(f"token service of {ref.registry} answered HTTP {resp.status}")
            data = json.loads(resp.read())
        except ValueError:
            raise ToolError(f"token service of {ref.registry} returned no JSON") from None
        finally:
            resp.close()
        token = data.get("token") or data.get("access_token")
        if not token:
            raise ToolError(f"token service of {ref.registry} returned no token")
        return f"Bearer {token}"

    def _fail(self, ref: Reference, resp: _Response, what: str) -> ToolError:
        try:
            detail = json.loads(resp.read()).get("errors", [{}])[0].get("message", "")
        except (ValueError, AttributeError, IndexError, OSError):
            detail = ""
        finally:
            resp.close()
        if resp.status == 403:
            return ToolError(f"registry {ref.registry} denied access to {ref.repository} (403) while {what}",
                             hint=f"check that your credentials for {ref.registry} may do this")
        return ToolError(f"registry {ref.registry} answered HTTP {resp.status} while {what}"
                         + (f": {detail}" if detail else ""))

    # -- pull -----------------------------------------------------------------------------------------
    def get_manifest(self, ref: Reference, identifier: str | None = None) -> tuple[dict[str, Any], Digest, str]:
        ident = identifier or ref.identifier
        resp = self.request("GET", ref, f"/v2/{ref.repository}/manifests/{ident}",
                            scopes=[f"repository:{ref.repository}:pull"], headers={"Accept": ACCEPT})
        if resp.status == 404:
            resp.close()
            raise ToolError(f"image {ref.registry}/{ref.repository}:{ident} not found (404)",
                            hint="check the --base reference (repository and tag)")
        if resp.status != 200:
            raise self._fail(ref, resp, f"fetching the manifest of {ref}")
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

    def _blob_cache(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "slimserve" / "blobs"

    def fetch_blob(self, ref: Reference, digest: Digest) -> Path:
        """The blob as a verified file in the cache (downloaded once per digest)."""
        dest = self._blob_cache() / digest.algorithm / digest.hex
        if dest.is_file():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        resp = self.request("GET", ref, f"/v2/{ref.repository}/blobs/{digest}",
                            scopes=[f"repository:{ref.repository}:pull"])
        if resp.status != 200:
            raise self._fail(ref, resp, f"fetching blob {digest.short}")
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

    def pull(self, ref: Reference, platform: Platform) -> PulledImage:
        """The image for `platform` named by `ref`, with its layers downloaded and measured."""
        manifest, digest, media_type = self.get_manifest(ref)
        index_digest = None
        if media_type in INDEX_TYPES:
            index_digest = digest
            choice = _choose_platform(manifest, platform, ref)
            manifest, digest, media_type = self.get_manifest(ref, choice)
        if media_type not in MANIFEST_TYPES:
            raise ToolError(f"{ref} is a {media_type or 'schema 1'} manifest; slimserve reads OCI and Docker v2 images",
                            hint="choose a base published as an OCI or Docker schema 2 image")
        family = family_of(media_type)
        config_path = self.fetch_blob(ref, Digest.parse(manifest["config"]["digest"]))
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
            layer = _measured(self.fetch_blob(ref, Digest.parse(desc["digest"])), desc["mediaType"])
            if layer.diff_id != diff_id:
                raise ToolError(f"base layer {layer.digest.short} does not match its diff_id in the config of {ref}")
            layers.append(layer)
        annotations = tuple(sorted((manifest.get("annotations") or {}).items()))
        image = Image(config_bytes=config_bytes, layers=tuple(layers), family=family, annotations=annotations)
        return PulledImage(image, ref, digest, index_digest)

    # -- push -----------------------------------------------------------------------------------------
    def blob_exists(self, ref: Reference, digest: Digest, scopes: Sequence[str]) -> bool:
        resp = self.request("HEAD", ref, f"/v2/{ref.repository}/blobs/{digest}", scopes=scopes)
        resp.close()
        if resp.status in (200, 404):
            return resp.status == 200
        raise ToolError(f"registry {ref.registry} answered HTTP {resp.status} to a blob check")

    def _upload(self, ref: Reference, digest: Digest, path: Path, size: int, scopes: Sequence[str],
                chunk_size: int | None, mount_from: str | None) -> bool:
        """Upload one blob; True when the registry mounted it from `mount_from` instead."""
        url = f"/v2/{ref.repository}/blobs/uploads/"
        if mount_from:
            url += "?" + urllib.parse.urlencode({"mount": str(digest), "from": mount_from})
        resp = self.request("POST", ref, url, scopes=scopes, headers={"Content-Length": "0"}, body=lambda: b"")
        resp.close()
        if resp.status == 201:
            return True
        if resp.status != 202:
            raise self._fail(ref, resp, f"starting the upload of {digest.short}")
        location = self._location(ref, resp)
        if chunk_size and size > chunk_size:
            with open(path, "rb") as fh:
                offset = 0
                while chunk := fh.read(chunk_size):
                    end = offset + len(chunk) - 1
                    resp = self.request("PATCH", ref, location, scopes=scopes, body=lambda c=chunk: c, headers={  # type: ignore[misc]
                        "Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                        "Content-Range": f"{offset}-{end}"})
                    resp.close()
                    if resp.status != 202:
                        raise self._fail(ref, resp, f"uploading {digest.short} (bytes {offset}-{end})")
                    location = self._location(ref, resp)
                    offset = end + 1
            final = self._with_query(location, digest)
            resp = self.request("PUT", ref, final, scopes=scopes, headers={"Content-Length": "0"}, body=lambda: b"")
        else:
            with open(path, "rb") as fh:
                def rewind() -> BinaryIO:
                    fh.seek(0)
                    return fh
                resp = self.request("PUT", ref, self._with_query(location, digest), scopes=scopes, body=rewind,
                                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        resp.close()
        if resp.status != 201:
            raise self._fail(ref, resp, f"finishing the upload of {digest.short}")
        return False

    def _location(self, ref: Reference, resp: _Response) -> str:
        location = str(resp.headers.get("Location") or "")
        if not location:
            raise ToolError(f"registry {ref.registry} gave no upload location")
        return urllib.parse.urljoin(self._base(ref) + "/", location)

    @staticmethod
    def _with_query(location: str, digest: Digest) -> str:
        return location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": str(digest)})

    def push(self, image: Image, ref: Reference, *, chunk_size: int | None = None,
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
                if self.blob_exists(ref, digest, scopes):
                    outcome = skipped
                elif isinstance(source, bytes):
                    self._upload_bytes(ref, digest, source, scopes)
                    outcome = uploaded
                elif self._upload(ref, digest, source, size, scopes, chunk_size, mount_repo):
                    outcome = mounted
                else:
                    outcome = uploaded
                outcome.append(digest)
                done += 1
                if on_blob:
                    on_blob(digest, "skipped" if outcome is skipped else "sent")
            body = image.manifest_bytes()
            resp = self.request("PUT", ref, f"/v2/{ref.repository}/manifests/{ref.tag or image.digest}",
                                scopes=scopes, body=lambda: body,
                                headers={"Content-Type": image.family.manifest, "Content-Length": str(len(body))})
            resp.close()
            if resp.status not in (200, 201):
                raise self._fail(ref, resp, "putting the manifest")
        except ToolError as exc:
            raise ToolError(f"push to {ref} failed after {done} of {len(blobs)} blobs: {exc.message}",
                            hint="nothing was tagged; rerun to resume (blobs already sent are skipped)") from exc
        served = resp.headers.get("Docker-Content-Digest")
        if served and served != str(image.digest):
            raise ToolError(f"registry {ref.registry} stored the manifest as {served}, not {image.digest}")
        return PushResult(ref, image.digest, tuple(uploaded), tuple(mounted), tuple(skipped))

    def _upload_bytes(self, ref: Reference, digest: Digest, data: bytes, scopes: Sequence[str]) -> None:
        resp = self.request("POST", ref, f"/v2/{ref.repository}/blobs/uploads/", scopes=scopes,
                            headers={"Content-Length": "0"}, body=lambda: b"")
        resp.close()
        if resp.status != 202:
            raise self._fail(ref, resp, f"starting the upload of {digest.short}")
        resp = self.request("PUT", ref, self._with_query(self._location(ref, resp), digest), scopes=scopes,
                            body=lambda: data, headers={"Content-Type": "application/octet-stream",
                                                        "Content-Length": str(len(data))})
        resp.close()
        if resp.status != 201:
            raise self._fail(ref, resp, f"finishing the upload of {digest.short}")


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


def default_client(insecure: Iterable[str] = (), cache_dir: Path | None = None) -> RegistryClient:
    return RegistryClient(insecure=frozenset(insecure), cache_dir=cache_dir)
