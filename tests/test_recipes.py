"""Recipe strings: the grammar, step options with did-you-mean, the registry, the manifest record, the config
file, and the step-result cache that lets `int8` reuse what a `compare` already built."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimserve.errors import SlimserveError
from slimserve.optimizer.recipes import (
    describe_steps,
    make_registry,
    parse_recipe,
    registry,
    split_recipe_list,
)
from slimserve.optimizer.step_cache import StepCache, run_step
from slimserve.optimizer.steps import int8_auto, int8_weight
from slimserve.optimizer.steps.base import NoOptions, StepContext, StepResult, StepSpec, option
from slimserve.optimizer.steps.int4_weight import Int4Options
from tests.conftest import assert_clean_error, build_tiny_onnx, run_cli


@pytest.mark.parametrize(("recipe", "labels"), [
    ("int8", ["int8"]),
    ("prune-ffn-25+int8", ["prune-ffn-25", "int8"]),
    ("prune-ffn(percent=25)", ["prune-ffn-25"]),
    (" int4-weight( block = 64 , keep-int8=4 ) ", ["int4-weight(block=64,keep_int8=4)"]),
    ("int4-weight(block=32)", ["int4-weight"]),  # the default: the shortest form
    ("prune-heads-50(score=magnitude)+int8-dynamic(weight_type=uint8,exclude=none)",
     ["prune-heads(percent=50,score=magnitude)", "int8-dynamic(weight_type=uint8)"]),
    ("int8-dynamic(op_types=MatMul|Gemm)", ["int8-dynamic(op_types=MatMul|Gemm)"]),
])
def test_grammar_and_shortest_labels(recipe: str, labels: list[str]) -> None:
    steps = parse_recipe(recipe)
    assert [s.label for s in steps] == labels
    assert [s.label for s in parse_recipe("+".join(labels))] == labels  # a label parses back to itself


def test_a_recipe_list_keeps_commas_inside_options() -> None:
    assert split_recipe_list("int8, int4-weight(block=64,keep_int8=4),prune-ffn-25+int8,") == [
        "int8", "int4-weight(block=64,keep_int8=4)", "prune-ffn-25+int8"]


def test_options_are_typed_values() -> None:
    (step,) = parse_recipe("int4-weight(block=64,symmetric=true,accuracy_level=4)")
    assert step.options == Int4Options(block=64, symmetric=True, accuracy_level=4)
    (dyn,) = parse_recipe("int8-dynamic(reduce_range=false,exclude=3,op_types=MatMul|Gemm)")
    assert (dyn.options.reduce_range, dyn.options.exclude, dyn.options.op_types) == (False, 3, ("MatMul", "Gemm"))


@pytest.mark.parametrize(("recipe", "message", "hint"), [
    ("int8-weigth", "unknown recipe step 'int8-weigth'", "did you mean 'int8-weight'"),
    ("int4-weight(blok=64)", "unknown option 'blok'", "did you mean 'block'"),
    ("int8-weight(matmul=dqq)", "is not a choice", "did you mean 'dq'"),
    ("int4-weight(block=48)", "not a power of two", None),
    ("int4-weight(block=big)", "not a whole number", "block=32"),
    ("int4-weight(symmetric=maybe)", "not true or false", "symmetric=true"),
    ("int4-weight(block)", "not key=value", None),
    ("int4-weight(block=64", "one pair of parentheses", None),
    ("int4-weight(block=64,block=32)", "given twice", None),
    ("prune-ffn", "prune-ffn needs percent", "prune-ffn-25"),
    ("prune-ffn-0", "between 1 and 99", "prune-ffn-25"),
    ("prune-ffn-25(percent=30)", "sets percent twice", None),
    ("int8+", "empty", None),
    ("int8(x=1)", "unknown option 'x'", "int8 options: priority, cpu"),
])
def test_bad_recipes_are_one_line_user_errors(recipe: str, message: str, hint: str | None) -> None:
    with pytest.raises(SlimserveError) as info:
        parse_recipe(recipe)
    assert message in info.value.message and "\n" not in info.value.message
    if hint:
        assert info.value.hint and hint in info.value.hint


def test_registry_is_explicit_and_refuses_duplicates() -> None:
    assert list(registry()) == ["fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight", "int8-resident",
                                "int4-weight", "int8",
                                "prune-ffn", "prune-heads", "sparsity"]
    with pytest.raises(ValueError, match="registered twice"):
        make_registry([int8_weight.SPEC, int8_weight.SPEC])


def test_list_recipes_shows_every_option_with_help() -> None:
    text = describe_steps()
    for spec in registry().values():
        from slimserve.optimizer.step_options import fields_of

        for f in fields_of(spec.options):
            assert f.help, f"{spec.name}.{f.name} has no help text"
            assert f"{f.name}: " in text
    assert "block: int, default 32: MatMul weights per 4-bit block" in text
    result = run_cli("optimize", "--list-recipes")
    assert result.returncode == 0 and "keep_int8: int, default 12" in result.stdout


def test_manifest_records_resolved_options_and_the_config_file_sets_them(tmp_path: Path) -> None:
    model = build_tiny_onnx(tmp_path / "tiny.onnx", hidden=96)
    (tmp_path / "slimserve.toml").write_text('[optimize]\nrecipe = "int8-weight(embeddings=none,min_elements=64,block=64)"\n')
    result = run_cli("optimize", model.name, "-o", "out", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "slimserve.json").read_text())
    assert manifest["recipe"] == "int8-weight(embeddings=none,min_elements=64,block=64)"
    (step,) = manifest["steps"]
    assert step["step"] == "int8-weight(embeddings=none,min_elements=64,block=64)"
    assert step["options"] == {"matmul": "fold", "embeddings": "none", "conv": True, "min_elements": 64,
                               "block": 64, "accuracy_level": 0, "search_clip": False}
    (tmp_path / "slimserve.toml").write_text('[optimize]\nrecipe = "int8-weight(blok=64)"\n')
    assert_clean_error(run_cli("optimize", model.name, "-o", "out2", cwd=tmp_path), contains="unknown option 'blok'")
    assert not (tmp_path / "out2").exists()


@dataclass(frozen=True)
class _Scale:
    factor: int = option(2, "a test option")


def test_step_cache_keys_on_input_bytes_step_options_and_calibration(tmp_path: Path) -> None:
    calls: list[Any] = []

    def copy(src: Path, dst: Path, ctx: StepContext, options: Any) -> StepResult:
        calls.append(options)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        return StepResult(path=dst, notes=("copied",), details={"n": len(calls)})

    spec = StepSpec(name="copy", help="", run=copy, options=_Scale)
    a = build_tiny_onnx(tmp_path / "a.onnx", seed=1)
    b = build_tiny_onnx(tmp_path / "b.onnx", seed=2)
    cache = StepCache.for_feeds(tmp_path / "cache", [])
    ctx = StepContext(work_dir=tmp_path, cache=cache)
    first = run_step(spec, _Scale(), a, tmp_path / "1" / "model.onnx", ctx)
    again = run_step(spec, _Scale(), a, tmp_path / "2" / "model.onnx", ctx)
    assert len(calls) == 1 and again.notes == first.notes and again.details == {"n": 1}
    assert again.path.read_bytes() == a.read_bytes()
    run_step(spec, _Scale(3), a, tmp_path / "3" / "model.onnx", ctx)
    run_step(spec, _Scale(), b, tmp_path / "4" / "model.onnx", ctx)
    other_feeds = StepCache.for_feeds(tmp_path / "cache", [{"x": np.zeros(2)}])
    run_step(spec, _Scale(), a, tmp_path / "5" / "model.onnx", StepContext(work_dir=tmp_path, cache=other_feeds))
    assert len(calls) == 4
    run_step(spec, _Scale(), a, tmp_path / "6" / "model.onnx", StepContext(work_dir=tmp_path))  # no cache: runs
    assert len(calls) == 5


def test_int8_reuses_int8_weight_built_before_it(tmp_path: Path) -> None:
    """As in `compare`: int8-weight first, then int8, which must not build int8-weight again."""
    src = build_tiny_onnx(tmp_path / "tiny.onnx", hidden=128)
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 128)).astype(np.float32)} for i in range(4)]
    cache = StepCache.for_feeds(tmp_path / "cache", feeds)

    def ctx(name: str) -> StepContext:
        (tmp_path / name).mkdir()
        return StepContext(work_dir=tmp_path / name, calibration=feeds, cache=cache)

    weight = run_step(int8_weight.SPEC, int8_weight.Int8WeightOptions(), src, tmp_path / "w" / "model.onnx", ctx("w-work"))
    auto = run_step(int8_auto.SPEC, NoOptions(), src, tmp_path / "a" / "model.onnx", ctx("a-work"))
    # a hit only copies the stored model; a build leaves the quantizer's scratch files too
    assert [p.name for p in (tmp_path / "a-work" / "int8-weight").iterdir()] == ["model.onnx"], "built again"
    assert len(list((tmp_path / "a-work" / "int8-dynamic").iterdir())) > 1
    assert auto.details["candidates"]["int8-weight"]
    assert len(list((tmp_path / "cache").iterdir())) == 3  # int8-weight, int8-dynamic, int8
    again = run_step(int8_auto.SPEC, NoOptions(), src, tmp_path / "b" / "model.onnx", ctx("b-work"))
    assert again.details == auto.details and not any((tmp_path / "b-work").iterdir())
    assert weight.path.exists()
