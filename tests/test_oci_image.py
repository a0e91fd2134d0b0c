"""The OCI values and the validator: digests, reproducible layers, append/with_config, and each rule
that Lambda enforces and local tools do not (each one broken on purpose, caught by `validate_image`)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from slimserve.errors import SlimserveError
from slimserve.packagers.oci import layout
from slimserve.packagers.oci.digest import Digest
from slimserve.packagers.oci.image import (
    DOCKER,
    DOCKER_LAYER_GZIP,
    OCI,
    OCI_INDEX,
    OCI_LAYER,
    Addendum,
    Platform,
    append_layers,
    canonical,
    convert_family,
    replace_config,
    with_config,
)
from slimserve.packagers.oci.layer import build_layer, source_date_epoch
from slimserve.packagers.oci.validate import image_problems, validate_image

from .registry_fixture import base_image


def test_digest_value() -> None:
    d = Digest.of_bytes(b"abc")
    assert str(d) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert Digest.parse(str(d)) == d and d.short == "sha256:ba7816bf8f01"
    for bad in ("ba7816bf", "sha256:xyz", "md5:" + "0" * 32):
        with pytest.raises(SlimserveError):
            Digest.parse(bad)


def test_platform_parse_and_match() -> None:
    assert Platform.parse("x86_64") == Platform("linux", "amd64")
    assert Platform.parse("linux/arm64").matches({"os": "linux", "architecture": "arm64", "variant": "v8"})
    assert not Platform.parse("linux/arm64").matches({"os": "linux", "architecture": "amd64"})
    with pytest.raises(SlimserveError):
        Platform.parse("linux/s390x")


def test_layer_is_reproducible_and_normalised(tmp_path: Path) -> None:
    src = tmp_path / "tool.sh"
    src.write_text("#!/bin/sh\n")
    src.chmod(0o775)  # group-writable on the host: must not leak into the layer
    data = tmp_path / "data.txt"
    data.write_text("x")
    data.chmod(0o600)
    entries = {"/opt/app/bin/tool.sh": src, "opt/app/data.txt": data, "opt/app/model/m.json": b"{}"}
    one = build_layer(entries, tmp_path / "1.tgz", epoch=1_700_000_000)
    two = build_layer(dict(reversed(entries.items())), tmp_path / "2.tgz", epoch=1_700_000_000)
    assert (tmp_path / "1.tgz").read_bytes() == (tmp_path / "2.tgz").read_bytes()
    assert one.digest == two.digest and one.size == (tmp_path / "1.tgz").stat().st_size
    raw = (tmp_path / "1.tgz").read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    tar_bytes = gzip.decompress(raw)
    assert Digest.of_bytes(tar_bytes) == one.diff_id and len(tar_bytes) == one.uncompressed_size
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["opt", "opt/app", "opt/app/bin", "opt/app/bin/tool.sh", "opt/app/data.txt",
                                         "opt/app/model", "opt/app/model/m.json"]
    modes = {m.name: m.mode for m in members}
    assert modes["opt/app/bin/tool.sh"] == 0o755 and modes["opt/app/data.txt"] == 0o644 and modes["opt"] == 0o755
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 1_700_000_000)}
    later = build_layer(entries, tmp_path / "3.tgz", epoch=1_700_000_001)
    assert later.digest != one.digest


def test_source_date_epoch() -> None:
    assert source_date_epoch({}) == 315532800
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "1700000000"}) == 1700000000
    with pytest.raises(SlimserveError):
        source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"})


def test_append_and_with_config_are_pure(tmp_path: Path) -> None:
    base = base_image(tmp_path)
    layer = build_layer({"var/task/app.py": b"print(1)\n"}, tmp_path / "app.tgz", epoch=0)
    image = append_layers(base, Addendum(layer, "COPY app.py /var/task/"))
    image = with_config(image, env={"PATH": "/var/task/bin:/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
                                    "EXTRA": "1"}, cmd=["app.handler2"])
    assert len(base.layers) == 2 and len(image.layers) == 3  # the base value is untouched
    cfg = image.config
    assert cfg["rootfs"]["diff_ids"][-1] == str(layer.diff_id)
    assert cfg["history"][-1] == {"created_by": "COPY app.py /var/task/"}
    env = cfg["config"]["Env"]
    assert env[0].startswith("PATH=/var/task/bin:") and env[-1] == "EXTRA=1" and "LANG=en_US.UTF-8" in env
    assert cfg["config"]["Entrypoint"] == ["/lambda-entrypoint.sh"] and cfg["config"]["WorkingDir"] == "/var/task"
    stamped = canonical(image, 86400)
    assert stamped.config["created"] == "1970-01-02T00:00:00Z"
    assert stamped.config["history"][-1]["created"] == "1970-01-02T00:00:00Z"
    assert stamped.config["history"][0]["created"] == "1970-01-01T00:00:00Z"  # the base's own stays
    docker = append_layers(convert_family(base, DOCKER), Addendum(layer, "COPY"))
    assert {lyr.media_type for lyr in docker.layers} == {DOCKER_LAYER_GZIP}  # one family, never mixed


# -- the validator: a good image passes, each Lambda rule broken on purpose is caught -------------------
def _good(tmp_path: Path, family=OCI):  # type: ignore[no-untyped-def]
    base = base_image(tmp_path, family=family)
    layer = build_layer({"var/task/app.py": b"x = 1\n"}, tmp_path / "new.tgz", epoch=0,
                        media_type=family.layer_gzip)
    image = canonical(with_config(append_layers(base, Addendum(layer, "COPY app.py")), cmd=["app.h"]), 0)
    return base, image


def _write(image, root: Path) -> Path:  # type: ignore[no-untyped-def]
    layout.write(image, root)
    return root


@pytest.mark.parametrize("family", [OCI, DOCKER], ids=["oci", "docker"])
def test_validator_accepts_a_good_image(tmp_path: Path, family) -> None:  # type: ignore[no-untyped-def]
    base, image = _good(tmp_path, family)
    root = _write(image, tmp_path / "img")
    assert image_problems(root, base) == []
    assert validate_image(root, base).digest == image.digest


def test_rejects_an_index_of_several_manifests(tmp_path: Path) -> None:
    _base, image = _good(tmp_path)
    root = _write(image, tmp_path / "img")
    index = json.loads((root / "index.json").read_text())
    att = dict(index["manifests"][0], platform={"os": "unknown", "architecture": "unknown"})
    index["manifests"].append(att)
    (root / "index.json").write_text(json.dumps(index))
    assert "exactly one" in image_problems(root)[0]
    nested = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index["manifests"]}
    data = json.dumps(nested).encode()
    (root / "blobs/sha256" / Digest.of_bytes(data).hex).write_bytes(data)
    index["manifests"] = [{"mediaType": OCI_INDEX, "digest": str(Digest.of_bytes(data)), "size": len(data)}]
    (root / "index.json").write_text(json.dumps(index))
    assert "image index" in image_problems(root)[0]


def test_rejects_mixed_media_type_families(tmp_path: Path) -> None:
    _base, image = _good(tmp_path, DOCKER)
    mixed = replace(image, layers=image.layers[:-1] + (replace(image.layers[-1], media_type=OCI.layer_gzip),))
    problems = image_problems(_write(mixed, tmp_path / "img"))
    assert any("is not docker's gzip layer type" in p for p in problems), problems


def test_rejects_uncompressed_layers(tmp_path: Path) -> None:
    _base, image = _good(tmp_path)
    plain = tmp_path / "plain.tar"
    plain.write_bytes(gzip.decompress(image.layers[-1].path.read_bytes()))
    last = replace(image.layers[-1], path=plain, digest=Digest.of_file(plain), size=plain.stat().st_size,
                   media_type=OCI_LAYER)
    problems = image_problems(_write(replace(image, layers=image.layers[:-1] + (last,)), tmp_path / "img"))
    assert any("is not oci's gzip layer type" in p for p in problems)
    assert any("not gzip-compressed" in p for p in problems)


def test_rejects_wrong_diff_ids(tmp_path: Path) -> None:
    _base, image = _good(tmp_path)
    cfg = image.config
    cfg["rootfs"]["diff_ids"][-1] = str(Digest.of_bytes(b"not the tar"))
    problems = image_problems(_write(replace_config(image, cfg), tmp_path / "img"))
    assert any("is not the sha256 of its uncompressed tar" in p for p in problems), problems


def test_rejects_missing_history(tmp_path: Path) -> None:
    _base, image = _good(tmp_path)
    cfg = image.config
    cfg["history"].pop()
    problems = image_problems(_write(replace_config(image, cfg), tmp_path / "img"))
    assert any("history has 2 non-empty entries for 3 layers" in p for p in problems), problems


def test_rejects_missing_parent_directories(tmp_path: Path) -> None:
    _base, image = _good(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # what a naive writer does: files only
        info = tarfile.TarInfo("var/task/app.py")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"x = 1\n"))
    raw = buf.getvalue()
    blob = tmp_path / "naive.tgz"
    blob.write_bytes(gzip.compress(raw, mtime=0))
    last = replace(image.layers[-1], path=blob, digest=Digest.of_file(blob), size=blob.stat().st_size,
                   diff_id=Digest.of_bytes(raw))
    cfg = image.config
    cfg["rootfs"]["diff_ids"][-1] = str(Digest.of_bytes(raw))
    naive = replace(replace_config(image, cfg), layers=image.layers[:-1] + (last,))
    problems = image_problems(_write(naive, tmp_path / "img"))
    assert any("no entry for parent directories var, var/task" in p for p in problems), problems


@pytest.mark.parametrize("change, message", [
    ({"Env": ["PATH=/app/bin"]}, "Env LANG of the base was dropped"),
    ({"Env": [*["PATH=/app/bin"], "LANG=C", "LAMBDA_TASK_ROOT=/var/task", "LAMBDA_RUNTIME_DIR=/var/runtime"]},
     "Env PATH replaces the base's value"),
    ({"WorkingDir": "/app"}, "WorkingDir '/app' replaces the base's '/var/task'"),
    ({"Entrypoint": None}, "Entrypoint of the base was replaced or dropped"),
    ({"Cmd": None, "Entrypoint": None}, "no Cmd/Entrypoint"),
    ({"Labels": None}, "config.Labels of the base was dropped"),
])
def test_rejects_replacing_the_base_runtime_config(tmp_path: Path, change: dict, message: str) -> None:  # type: ignore[type-arg]
    base, image = _good(tmp_path)
    cfg = image.config
    for key, value in change.items():
        if value is None:
            cfg["config"].pop(key, None)
        else:
            cfg["config"][key] = value
    problems = image_problems(_write(replace_config(image, cfg), tmp_path / "img"), base)
    assert any(message in p for p in problems), problems
    with pytest.raises(SlimserveError, match="invalid image"):
        validate_image(tmp_path / "img", base)


def test_rejects_an_image_not_built_on_the_base(tmp_path: Path) -> None:
    _base, image = _good(tmp_path)
    other = base_image(tmp_path / "o", tag="2")
    assert any("base image's layers are not the first" in p for p in image_problems(_write(image, tmp_path / "i"), other))


def test_rejects_corrupt_blobs(tmp_path: Path) -> None:
    _base, image = _good(tmp_path)
    root = _write(image, tmp_path / "img")
    blob = layout.blob_path(root, image.layers[-1].digest)
    blob.unlink()
    blob.write_bytes(b"tampered")
    problems = image_problems(root)
    assert any("does not match its digest" in p for p in problems)
