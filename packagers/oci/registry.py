"""A small OCI distribution API client (stdlib urllib): pull one platform's image, push an image.

The client is the transport and its auth; each job is its own module:
- references (`reference.py`): `[host[:port]/]repo[:tag][@sha256:...]`, credentials inside one refused;
- credentials (`auth.py`): REGISTRY_AUTH_FILE, the Docker config with its credential helpers, podman's
  auth.json; on a 401 challenge, a bearer token from the realm (with basic credentials when some are
  stored) or basic auth;
- transport (here): https always, plain http only for hosts the caller lists as insecure
  (`--insecure-registry`); redirects followed for GET/HEAD only, the Authorization header never forwarded;
- pull and its blob cache (`pull.py`); push (`push.py`).

Every failure is one line in a `ToolError`: unreachable registry, 401/403, unknown image, wrong
architecture, no matching platform in an index, a push failing halfway.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from slimserve.errors import ToolError, first_line

from . import pull as _pull
from . import push as _push
from .auth import basic_credentials, parse_challenge
from .digest import Digest
from .image import Image, Platform
from .pull import PulledImage
from .push import PushResult
from .reference import Reference

__all__ = ["PulledImage", "PushResult", "Reference", "RegistryClient", "basic_credentials", "default_client"]

USER_AGENT = "slimserve-oci/1"


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
        scheme, params = parse_challenge(challenge)
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

    # -- pull (pull.py) and push (push.py) --------------------------------------------------------------
    def get_manifest(self, ref: Reference, identifier: str | None = None) -> tuple[dict[str, Any], Digest, str]:
        return _pull.get_manifest(self, ref, identifier)

    def fetch_blob(self, ref: Reference, digest: Digest) -> Path:
        """The blob as a verified file in the cache (downloaded once per digest)."""
        return _pull.fetch_blob(self, ref, digest)

    def pull(self, ref: Reference, platform: Platform) -> PulledImage:
        """The image for `platform` named by `ref`, with its layers downloaded and measured."""
        return _pull.pull(self, ref, platform)

    def blob_exists(self, ref: Reference, digest: Digest, scopes: Sequence[str]) -> bool:
        return _push.blob_exists(self, ref, digest, scopes)

    def push(self, image: Image, ref: Reference, *, chunk_size: int | None = None,
             mount_from: Reference | None = None,
             on_blob: Callable[[Digest, str], None] | None = None) -> PushResult:
        """Upload `image` to `ref` (blobs first, the manifest last, so a failure never leaves a tag)."""
        return _push.push(self, image, ref, chunk_size=chunk_size, mount_from=mount_from, on_blob=on_blob)


def default_client(insecure: Iterable[str] = (), cache_dir: Path | None = None) -> RegistryClient:
    return RegistryClient(insecure=frozenset(insecure), cache_dir=cache_dir)
