"""Container platforms as values: a `PlatformSpec` (where the files go, what the image runs) made from the
platform profile's [packager] table, so adding a container platform is adding a profile file."""

from __future__ import annotations

from dataclasses import dataclass

from slimserve.errors import SlimserveError
from slimserve.packagers.target import Target
from slimserve.profiles.loader import packaged_platforms
from slimserve.profiles.schema import Profile
from slimserve.runtime import handler_modules

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
                            handler_files=handler_modules("lambda_handler.py"), cmd=(LAMBDA_HANDLER,),
                            handler=LAMBDA_HANDLER)
    return PlatformSpec(
        name=profile.name, default_base=packager.base, app_dir=app, packages_dir=packages,
        handler_files=handler_modules("http_app.py", "lambda_handler.py"),
        cmd=("python3", f"{app}/http_app.py"),
        env=(("PYTHONPATH", f"{packages}:{app}"), ("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1")),
        working_dir=app, exposed_ports=(f"{packager.port}/tcp",), extra_wheels=(WAITRESS,),
    )


def platform_spec(platform: str) -> PlatformSpec:
    """The container platform's spec from its shipped profile (a name, not a file: `--platform NAME`)."""
    from slimserve.profiles.loader import load_profile

    names = packaged_platforms("container")
    if platform not in names:
        raise SlimserveError(f"unknown container platform {platform!r}", hint=f"choose one of {', '.join(names)}")
    return spec_from_profile(load_profile(platform))


def default_base(platform: str, target: Target) -> str:
    return platform_spec(platform).default_base.format(python=target.python)


