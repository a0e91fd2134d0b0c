"""Registry credentials, looked up where crane, skopeo, podman and docker keep them, first match wins:
`$REGISTRY_AUTH_FILE` (skopeo/podman's auth.json), the Docker config (`$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`), then podman's defaults (`$XDG_RUNTIME_DIR/containers/auth.json`,
`~/.config/containers/auth.json`). In each file: `credHelpers[host]`, else `auths[host]` (`auth` = base64
user:password, or `username`/`password`), else `credsStore`; a helper is run as `docker-credential-<name>
get`, as docker does. Also the parsing of a registry's `WWW-Authenticate` challenge.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError, ToolError, first_line

from .reference import DOCKER_HUB, DOCKER_HUB_API


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


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', params)}
