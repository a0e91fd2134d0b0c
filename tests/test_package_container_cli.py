"""`slimserve package --target container` through the CLI, on the real int8 MiniLM output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimserve.packagers.oci.validate import validate_image
from tests.conftest import assert_clean_error, run_cli
from tests.registry_fixture import Registry, make_base_layout, push_layout, registry, skopeo  # noqa: F401

pytestmark = pytest.mark.slow


def test_container_route_for_the_default_model(tmp_path: Path, minilm_int8: Path, registry: Registry) -> None:  # noqa: F811
    base = make_base_layout(tmp_path / "base")
    out = tmp_path / "image-out"
    dest = f"{registry.host}/slimserve/minilm:int8"
    result = run_cli("package", str(minilm_int8), "--target", "container", "-o", str(out), "--base", f"oci:{base}",
                     "--push", dest, "--insecure-registry", registry.host, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["platform"] == "aws-lambda-container" and summary["digest"].startswith("sha256:")
    image = validate_image(out / "image")
    assert len(image.layers) == 2 + 3  # the base's two layers, then runtime, handler, model
    manifest = json.loads((out / "slimserve.json").read_text())
    assert manifest["handler"] == "lambda_handler.handler"
    inspected = skopeo("inspect", "--tls-verify=false", f"docker://{dest}")
    assert inspected.returncode == 0, inspected.stderr
    assert len(json.loads(inspected.stdout)["Layers"]) == 5
    assert (out / "Dockerfile").is_file() and (out / "context" / ".dockerignore").is_file()

    # check understands the built image: the container platform is judged on its measured uncompressed size
    checked = run_cli("check", str(out), "--platform", "aws-lambda-container", "--format", "json", "--runs", "1")
    assert checked.returncode == 0, checked.stderr
    image_check = next(c for c in json.loads(checked.stdout)["platforms"]["aws-lambda-container"]["checks"]
                       if c["id"] == "image-size")
    assert image_check["estimate"] is False and "≈" not in image_check["reason"], image_check
    from slimserve.profiles.schema import SIZE_UNITS

    measured_bytes = image_check["measured"] * SIZE_UNITS[image_check["unit"]]
    assert measured_bytes == pytest.approx(manifest["package"]["image"]["uncompressed_bytes"], rel=0.02)


def test_container_route_bad_base_is_one_line(tmp_path: Path, minilm_int8: Path) -> None:
    out = tmp_path / "image-out"
    result = run_cli("package", str(minilm_int8), "--target", "container", "-o", str(out),
                     "--base", "127.0.0.1:9/nothing/here:1", "--insecure-registry", "127.0.0.1:9")
    assert_clean_error(result, code=result.returncode)
    assert result.returncode != 0 and not out.exists()
