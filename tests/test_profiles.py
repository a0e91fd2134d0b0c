"""Every shipped profile loads with sourced, unit-checked limits; broken profile files fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimserve.errors import SlimserveError
from slimserve.profiles.loader import list_profiles, load_profile, load_profile_file
from slimserve.profiles.schema import LIMIT_FAMILIES

SHIPPED = ["aws-lambda-container", "aws-lambda-zip", "azure-functions-flex", "azure-functions-premium",
           "gcp-cloud-functions-gen1", "gcp-cloud-run", "vercel-python"]
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def test_list_profiles_ships_every_platform() -> None:
    assert list_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_with_sources(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.runtime.python and p.runtime.archs
    assert p.memory.allows(p.memory.lowest) and p.memory.allows(p.memory.highest)
    assert p.cpu.vcpus_at(p.memory.lowest) > 0
    for key in LIMIT_FAMILIES:
        limit = getattr(p.limits, key)
        if limit is not None:
            assert limit.source.startswith("https://") and limit.value > 0
    assert all(url.startswith("https://") for url in p.sources())
    if p.package == "container" and p.limits.image_size is not None:
        assert p.image is not None and p.image.base_size.note  # the estimate says it is one


def test_aws_lambda_zip_numbers() -> None:
    p = load_profile("aws-lambda-zip")
    assert p.limits.unzipped_size is not None and p.limits.unzipped_size.base() == 262_144_000
    zipped = p.limits.zipped_size
    assert zipped is not None and zipped.base() == 50 * 1024**2
    assert zipped.severity == "warn" and zipped.per_archive  # larger uploads go through S3
    assert p.limits.layers is not None and p.limits.layers.value == 5
    assert p.limits.init_timeout is not None and p.limits.init_timeout.base() == 10_000
    assert (p.memory.lowest, p.memory.highest) == (128, 10_240) and p.memory.allows(1_000)
    assert p.cpu.vcpus_at(1_769) == pytest.approx(1.0)
    assert p.cpu.vcpus_at(512) == pytest.approx(0.289, abs=1e-3)
    assert 5.7 < p.cpu.vcpus_at(10_240) <= 6
    assert p.runtime.python == ("3.10", "3.11", "3.12", "3.13", "3.14")
    assert set(p.runtime.archs) == {"x86_64", "arm64"}
    assert {"invocation_payload", "tmp_storage_min", "tmp_storage_max"} <= set(p.info)


def test_other_platform_numbers() -> None:
    container = load_profile("aws-lambda-container")
    assert container.limits.image_size is not None and container.limits.image_size.base() == 10 * 1000**3
    assert container.limits.unzipped_size is None  # the zip limit does not apply to images
    run = load_profile("gcp-cloud-run")
    assert run.memory.highest == 32 * 1024 and run.cpu.vcpus_at(4096) == 1 and run.cpu.vcpus_at(4097) == 2
    assert run.cpu.vcpus_at(24 * 1024 + 1) == 8
    gen1 = load_profile("gcp-cloud-functions-gen1")
    assert gen1.limits.zipped_size is not None and gen1.limits.zipped_size.value == 100
    assert gen1.limits.unzipped_size is not None and gen1.limits.unzipped_size.value == 500
    assert gen1.memory.highest == 8192 and not gen1.memory.allows(1000)
    assert load_profile("azure-functions-flex").memory.values == (512, 2048, 4096)
    assert load_profile("azure-functions-premium").memory.values == (3584, 7168, 14336)
    vercel = load_profile("vercel-python")
    assert vercel.limits.unzipped_size is not None and vercel.limits.unzipped_size.base() == 250 * 1000**2


def test_memory_candidates_round_to_64_and_respect_tiers() -> None:
    lam = load_profile("aws-lambda-zip").memory
    assert lam.candidates(379)[:2] == [384, 448]
    assert lam.candidates(100)[0] == 128
    assert lam.candidates(10_200) == [10_240]
    assert lam.candidates(20_000) == []
    assert load_profile("azure-functions-flex").memory.candidates(600) == [2048, 4096]


def test_profile_loads_from_a_user_file(tmp_path: Path) -> None:
    text = (PROFILES_DIR / "aws-lambda-zip.toml").read_text().replace('name = "aws-lambda-zip"', 'name = "my-lambda"')
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert load_profile(str(path)).name == "my-lambda"
    assert load_profile(path).limits.layers is not None


def _broken(tmp_path: Path, old: str, new: str) -> str:
    text = (PROFILES_DIR / "aws-lambda-zip.toml").read_text()
    assert old in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(SlimserveError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("[limits.unzipped_size]", "[limits.unzipped_sise]", "did you mean 'unzipped_size'"),
    ("[runtime]", "[runtme]", "did you mean 'runtime'"),
    ("max_vcpus = 6", "max_vcpu = 6", "did you mean 'max_vcpus'"),
    ('value = 6\nunit = "MB"', 'valeu = 6\nunit = "MB"', "did you mean 'value'"),  # inside an [info.*] entry
    ("[memory]\n", "[memory]\ncolour = 1\n", "unknown key 'memory.colour'"),
])
def test_unknown_keys_suggest_the_right_one(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in _broken(tmp_path, old, new)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("[limits.layers]\nvalue = 5\nunit = \"count\"", "[limits.layers]\nvalue = 5\nunit = \"MB\"",
     "limits.layers needs a unit among count"),
    ('value = 250\nunit = "MiB"', 'value = 250\nunit = "MiBs"', "unknown unit 'MiBs'"),
    ("value = 250\n", "value = -250\n", "greater than or equal to 0"),
    ('source = "https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html"',
     'source = "docs.aws.amazon.com/lambda"', "must be a public https:// page"),
    ("min = 128\nmax = 10240", "min = 20000\nmax = 10240", "memory.min 20000 is above memory.max"),
    ('model = "proportional"', 'model = "tiers"', "needs tiers"),
    ('archs = ["x86_64", "arm64"]', 'archs = ["x86_64", "sparc"]', "runtime.archs"),
    ('python = ["3.10"', 'python = ["3.10.1"', "python versions are written like"),
    ("default = 128", "default = 100", "memory.default 100 is not an allowed setting"),
])
def test_invalid_values_are_one_line_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in _broken(tmp_path, old, new)


def test_incomplete_profile_names_the_missing_table(tmp_path: Path) -> None:
    text = (PROFILES_DIR / "aws-lambda-zip.toml").read_text()
    head, _, rest = text.partition("[memory]")
    rest = rest[rest.index("[cpu]"):]
    path = tmp_path / "incomplete.toml"
    path.write_text(head + rest)
    with pytest.raises(SlimserveError, match="missing required key 'memory'"):
        load_profile_file(path)


def test_not_toml_not_utf8_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(SlimserveError, match="not valid TOML"):
        load_profile(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(SlimserveError, match="not UTF-8"):
        load_profile(binary)
    with pytest.raises(SlimserveError, match="does not exist"):
        load_profile(tmp_path / "missing.toml")


def test_unknown_platform_suggests_a_close_name() -> None:
    with pytest.raises(SlimserveError) as info:
        load_profile("aws-lamda-zip")
    assert "unknown platform 'aws-lamda-zip'" in str(info.value)
    assert info.value.hint is not None and "did you mean 'aws-lambda-zip'" in info.value.hint


def test_packager_tables_say_what_a_packager_needs() -> None:
    from slimserve.profiles.loader import packaged_platforms

    assert packaged_platforms() == ["aws-lambda-container", "aws-lambda-zip", "gcp-cloud-run"]
    assert packaged_platforms("container") == ["aws-lambda-container", "gcp-cloud-run"]
    zip_ = load_profile("aws-lambda-zip").packager
    assert zip_ is not None and (zip_.artifact, zip_.interface, zip_.packages_dir) == ("zip", "lambda-runtime-api",
                                                                                     "/opt/python")
    run = load_profile("gcp-cloud-run").packager
    assert run is not None and run.interface == "http" and run.port == 8080
    assert run.base_for("3.11") == "docker.io/library/python:3.11-slim"
    assert load_profile("vercel-python").packager is None  # checked, not packaged


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('interface = "lambda-runtime-api"', 'interfase = "lambda-runtime-api"', "did you mean 'interface'"),
    ('interface = "lambda-runtime-api"', 'interface = "grpc"', "packager.interface"),
    ('artifact = "zip"', 'artifact = "container"', "needs base"),
    ('app_dir = "/var/task"', 'app_dir = "var/task"', "packager.app_dir"),
])
def test_broken_packager_tables_are_one_line_errors(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert expected in _broken(tmp_path, old, new)


def test_adding_a_container_platform_is_adding_a_file(tmp_path: Path) -> None:
    """A new profile with a container [packager] is everything the image builder needs."""
    from slimserve.packagers.container import spec_from_profile

    text = (PROFILES_DIR / "gcp-cloud-run.toml").read_text().replace('name = "gcp-cloud-run"', 'name = "my-run"')
    text = text.replace("port = 8080", "port = 9000").replace('app_dir = "/app"', 'app_dir = "/srv"')
    path = tmp_path / "my-run.toml"
    path.write_text(text.replace('packages_dir = "/app/packages"', 'packages_dir = "/srv/site"'))
    spec = spec_from_profile(load_profile(path))
    assert spec.name == "my-run" and spec.exposed_ports == ("9000/tcp",) and spec.cmd == ("python3", "/srv/http_app.py")
    assert dict(spec.env)["PYTHONPATH"] == "/srv/site:/srv" and spec.default_base.endswith("{python}-slim")
    with pytest.raises(SlimserveError, match="cannot build a container image for vercel-python"):
        spec_from_profile(load_profile("vercel-python"))


def test_the_lambda_layer_prefix_is_the_zip_profiles_packages_dir() -> None:
    from slimserve.packagers.closure import LAYER_PREFIX

    packager = load_profile("aws-lambda-zip").packager
    assert packager is not None and packager.packages_dir == LAYER_PREFIX
