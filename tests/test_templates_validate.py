"""Every SAM template slimserve generates passes AWS's own validators: `sam validate` (the SAM translator
turns it into CloudFormation), `sam validate --lint` (cfn-lint through the SAM CLI) and cfn-lint itself.

The shapes are the ones `package --target lambda` can write: python3.10 to 3.13, x86_64 and arm64, SnapStart on
(3.12+) or off, X-Ray tracing on or off, text / image / tensor layers, and one template written by
`package_lambda` itself. The container targets write no template (an image and a Dockerfile): nothing to
validate there. The SAM CLI lives in its own venv (`make sam`, part of `make test`; requirements/sam.txt) and
runs with no AWS credentials and a throwaway HOME: validation is offline.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slimserve.bundle import load_bundle
from slimserve.packagers.lambda_target import package_lambda, sam_template
from slimserve.packagers.target import Target
from tests.conftest import ROOT, build_tiny_onnx, require

SAM_BIN = ROOT / ".cache" / "sam" / "bin"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"  # the test extra, beside this interpreter

# (python, arch, runtime extra, snapstart, tracing): every axis the template varies on, each value at least once
SHAPES = [
    ("3.10", "x86_64", "text", None, False),
    ("3.11", "arm64", "image", None, True),
    ("3.12", "x86_64", "text", None, False),
    ("3.12", "arm64", "", True, True),
    ("3.12", "x86_64", "image", False, False),
    ("3.13", "x86_64", "text", None, True),
    ("3.13", "arm64", "text", False, False),
    ("3.12", "x86_64", "generation", None, False),  # a text-generation model: its time budget in the environment
]


def _env(home: Path) -> dict[str, str]:
    """No credentials, no config, no telemetry: what a CI runner without AWS access has."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": f"{SAM_BIN}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "SAM_CLI_TELEMETRY": "0", "AWS_EC2_METADATA_DISABLED": "true"}


def sam_validate(template: Path, home: Path, *, lint: bool) -> subprocess.CompletedProcess[str]:
    require((SAM_BIN / "sam").is_file(), "the AWS SAM CLI (`make sam`, part of `make test`)")
    args = [str(SAM_BIN / "sam"), "validate", "--region", "us-east-1", "-t", str(template)]
    return subprocess.run(args + (["--lint"] if lint else []), capture_output=True, text=True, check=False,
                          env=_env(home), cwd=template.parent, timeout=300)


# Lambda deprecated python3.10 on 2026-10-31 (AWS's runtime table): both linters warn about it (W2531) and
# about nothing else. slimserve still packages it (the profiles list it) while AWS lets functions be created.
DEPRECATED = {"3.10": "W2531"}


def _only(rule: str, output: str) -> bool:
    findings = [line for line in output.splitlines() if re.match(r"(\[\[)?[EWI]\d{4}\b", line)]
    return bool(findings) and all(rule in line for line in findings)


def assert_valid(template: Path, home: Path, deprecated: str | None = None) -> None:
    """All three validators accept `template` (with only the runtime's deprecation warning, when it has one)."""
    for lint in (False, True):
        proc = sam_validate(template, home, lint=lint)
        output = proc.stdout + proc.stderr
        if lint and deprecated:
            assert proc.returncode == 1 and _only(deprecated, proc.stdout), output
        else:
            assert proc.returncode == 0 and "is a valid SAM Template" in proc.stdout, (lint, output)
    require(CFN_LINT.is_file(), "cfn-lint (pyproject's test extra)")
    proc = subprocess.run([str(CFN_LINT), str(template)], capture_output=True, text=True, check=False)
    if deprecated:  # cfn-lint exits 4 for warnings only
        assert proc.returncode == 4 and _only(deprecated, proc.stdout), proc.stdout + proc.stderr
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr


def translate(template: Path, home: Path) -> dict[str, object]:
    """The CloudFormation the SAM translator (aws-sam-translator, the library `sam deploy` uses) makes of the
    template, with the local zips standing in as S3 objects as `sam package` would upload them."""
    script = (
        "import json, sys\n"
        "from samtranslator.translator.transform import transform\n"
        "from samtranslator.yaml_helper import yaml_parse\n"
        "t = yaml_parse(open(sys.argv[1]).read())\n"
        "for r in t['Resources'].values():\n"
        "    for k in ('CodeUri', 'ContentUri'):\n"
        "        if k in r['Properties']:\n"
        "            r['Properties'][k] = 's3://bucket/' + r['Properties'][k]\n"
        "print(json.dumps(transform(t, {}, None)))\n"
    )
    require((SAM_BIN / "python").is_file(), "the AWS SAM CLI's venv (`make sam`, part of `make test`)")
    proc = subprocess.run([str(SAM_BIN / "python"), "-c", script, str(template)], capture_output=True, text=True,
                          check=False, env={**_env(home), "AWS_DEFAULT_REGION": "us-east-1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize(("python", "arch", "extra", "snapstart", "tracing"), SHAPES)
def test_every_template_shape_passes_sam_validate_and_cfn_lint(tmp_path: Path, python: str, arch: str, extra: str,
                                                               snapstart: bool | None, tracing: bool) -> None:
    generation = extra == "generation"
    text = sam_template(Target(python, arch), 1536, "text" if generation else extra, 45, snapstart, tracing=tracing,
                        generation=generation)
    assert ("Tracing: Active" in text) is tracing
    assert ('SLIMSERVE_MAX_GENERATION_SECONDS: "38"' in text) is generation  # 45 s - max(2, 15%)
    assert ("SnapStart:" in text) is (snapstart if snapstart is not None else python >= "3.12")
    template = tmp_path / "template.yaml"
    template.write_text(text)
    assert_valid(template, tmp_path / "home", DEPRECATED.get(python))


def test_the_packaged_template_passes_and_tracing_reaches_deploy_md(tmp_path: Path) -> None:
    bundle = load_bundle(build_tiny_onnx(tmp_path / "tiny.onnx"))
    out = tmp_path / "pkg"
    package_lambda(bundle, out, Target("3.12"), memory_mb=512, tracing=True)
    assert "Tracing: Active" in (out / "template.yaml").read_text()
    assert_valid(out / "template.yaml", tmp_path / "home")
    deploy = (out / "DEPLOY.md").read_text()
    assert deploy.count("--tracing-config Mode=Active") == 2  # both CLI routes
    assert "policy/AWSXRayDaemonWriteAccess" in deploy and "needs no X-Ray SDK" in deploy
    off = tmp_path / "off"
    package_lambda(bundle, off, Target("3.12"), memory_mb=512)
    assert "Tracing" not in (off / "template.yaml").read_text()
    assert "--tracing-config" not in (off / "DEPLOY.md").read_text()


@pytest.mark.parametrize("tracing", [True, False])
def test_tracing_gives_the_generated_role_the_xray_policy(tmp_path: Path, tracing: bool) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(sam_template(Target("3.12"), 1024, "text", tracing=tracing))
    resources = translate(template, tmp_path / "home")["Resources"]
    assert isinstance(resources, dict)
    function = resources["ModelFunction"]["Properties"]
    policies = resources["ModelFunctionRole"]["Properties"]["ManagedPolicyArns"]
    assert "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole" in policies
    assert ("arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess" in policies) is tracing
    assert function.get("TracingConfig") == ({"Mode": "Active"} if tracing else None)
    assert function["LoggingConfig"] == {"LogFormat": "JSON"}


def test_the_validators_reject_a_broken_template(tmp_path: Path) -> None:
    """They are not no-ops: a memory size Lambda does not offer fails the lint, an unknown function property
    fails the translator."""
    good = sam_template(Target("3.12"), 1024)
    memory = tmp_path / "memory.yaml"
    memory.write_text(good.replace("MemorySize: 1024", "MemorySize: 99999"))
    proc = sam_validate(memory, tmp_path / "home", lint=True)
    assert proc.returncode != 0 and "E3034" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(good.replace("SnapStart:", "SnapStartt:"))
    proc = sam_validate(unknown, tmp_path / "home", lint=False)
    assert proc.returncode != 0 and "SnapStartt" in proc.stdout + proc.stderr, proc.stdout + proc.stderr

