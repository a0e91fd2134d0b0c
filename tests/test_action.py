"""The GitHub side: the composite action (action.yml) and the workflow docs/ci.md shows.

actionlint lints workflows, not action metadata, so action.yml is checked here: every input it reads exists
and every input is read, every `uses:` is pinned by a commit SHA, every flag it hands `slimserve build` is an
option of build's click command (drift between the two fails here), and its steps, put into a workflow of
their own, pass actionlint (with shellcheck on the scripts). Its build step then runs for real, with bash, on
a tiny model. docs/ci.md's workflow is docs/examples/slimserve-build.yml verbatim, and actionlint passes on it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from slimserve.commands.build import command as build_command
from tests.conftest import ROOT, require

ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / "docs" / "examples" / "slimserve-build.yml"
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yml"))  # the workflow, and one using the action
CI_MD = ROOT / "docs" / "ci.md"
ACTIONLINT = ROOT / ".cache" / "sam" / "bin" / "actionlint"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def _action() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ACTION.read_text())
    return loaded


def _steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = _action()["runs"]["steps"]
    return steps


def _build_step() -> dict[str, Any]:
    (step,) = [s for s in _steps() if s.get("id") == "build"]
    return step


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    require(ACTIONLINT.is_file(), "actionlint (`make sam`, part of `make test`)")
    require(shutil.which("shellcheck"), "shellcheck (Debian package; `make system-deps`) for actionlint's script checks")
    return subprocess.run([str(ACTIONLINT), "-no-color", str(path)], capture_output=True, text=True, check=False,
                          timeout=120)


def test_every_input_read_exists_and_every_input_is_read() -> None:
    text = ACTION.read_text()
    declared = set(_action()["inputs"])
    used = set(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", text))
    assert used - declared == set(), f"inputs read but not declared: {used - declared}"
    assert declared - used == set(), f"inputs declared but never read: {declared - used}"
    assert _action()["inputs"]["model"]["required"] is True
    for name, spec in _action()["inputs"].items():
        assert spec.get("description"), name
        assert spec.get("required") or "default" in spec, name


def test_every_uses_is_pinned_by_a_commit_sha() -> None:
    for path in (ACTION, WORKFLOW):
        lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(- )?uses:", line)]
        assert lines, path
        for line in lines:
            ref = line.split("uses:", 1)[1].split("#", 1)[0].strip()
            assert PINNED.match(ref), (path.name, line)
            assert re.search(r"#\s*v\d+\.\d+\.\d+\s*$", line), f"say which release the SHA is: {line}"


def test_every_flag_given_to_build_is_an_option_of_build() -> None:
    options = {opt for param in build_command.params if isinstance(param, click.Option) for opt in param.opts}
    step = _build_step()
    script = step["run"]
    (args_line,) = [line for line in script.splitlines() if line.strip().startswith("args=(build ")]
    flags = re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", args_line)
    optional = re.findall(r'^\s*opt (--[\w-]+) "\$(\w+)"', script, flags=re.MULTILINE)
    assert flags and optional
    for flag in flags + [flag for flag, _ in optional]:
        assert flag in options, f"slimserve build has no option {flag}"
    env = step["env"]
    for _, var in optional:
        assert re.fullmatch(r"\$\{\{ inputs\.[\w-]+ \}\}", env[var]), (var, env.get(var))
    for var in re.findall(r'"\$([A-Z_]+)"', args_line):
        assert var in env, var
    # the action's defaults are values build accepts
    platform_default = _action()["inputs"]["platform"]["default"]
    arch = next(p for p in build_command.params if p.name == "arch")
    assert isinstance(arch.type, click.Choice) and _action()["inputs"]["arch"]["default"] in arch.type.choices
    fmt = next(p for p in build_command.params if p.name == "fmt")
    assert isinstance(fmt.type, click.Choice) and "github" in fmt.type.choices
    from slimserve.profiles.loader import packaged_platforms

    assert platform_default in packaged_platforms()


def test_outputs_come_from_what_the_build_step_writes() -> None:
    outputs = _action()["outputs"]
    script = _build_step()["run"]
    for name in ("recipe", "exit-code"):
        assert outputs[name]["value"] == f"${{{{ steps.build.outputs.{name} }}}}"
        assert f'echo "{name}=' in script


def test_the_action_steps_pass_actionlint_as_a_workflow(tmp_path: Path) -> None:
    """The composite's steps, run as a job whose `inputs` are workflow_dispatch inputs of the same names:
    actionlint then checks their expressions, the pinned actions' inputs and (shellcheck) the scripts."""
    action = _action()
    workflow = {
        "name": "action-as-workflow",
        "on": {"workflow_dispatch": {"inputs": {
            name: {"description": spec["description"], "type": "string", "required": bool(spec.get("required")),
                   **({"default": spec["default"]} if "default" in spec else {})}
            for name, spec in action["inputs"].items()}}},
        "permissions": {"contents": "read"},
        "jobs": {"build": {"runs-on": "ubuntu-24.04", "steps": action["runs"]["steps"]}},
    }
    path = tmp_path / "action-as-workflow.yml"
    path.write_text(yaml.safe_dump(workflow, sort_keys=False))
    proc = actionlint(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_ci_md_shows_each_example_workflow_verbatim_and_it_passes_actionlint(example: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", CI_MD.read_text(), flags=re.DOTALL)
    assert example.read_text() in blocks, f"docs/ci.md must include docs/examples/{example.name} verbatim"
    proc = actionlint(example)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workflow = yaml.safe_load(example.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    for line in example.read_text().splitlines():
        if "uses:" in line and "OWNER/slimserve@" not in line:
            assert PINNED.match(line.split("uses:", 1)[1].split("#", 1)[0].strip()), line


def test_the_example_workflow_installs_from_the_checkout_with_torchs_cpu_index() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    install = next(s for s in workflow["jobs"]["build"]["steps"] if s.get("name") == "Install slimserve")["run"]
    assert "download.pytorch.org/whl/cpu" in install and "-c .slimserve/constraints.txt" in install
    assert '"./.slimserve[export,plot]"' in install


def test_ci_md_installs_slimserve_the_way_it_can_be_installed() -> None:
    text = CI_MD.read_text()
    assert not re.search(r'pip install[^\n]*"slimserve\[', text), "slimserve is not on the package index"
    for block in re.findall(r"```(?:sh|yaml)\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            if "pip install" in line and "slimserve" in line + block:
                assert "whl/cpu" in block, block
    assert "action.yml" in text and "uses: OWNER/slimserve@" in text


@pytest.mark.slow
def test_the_build_step_runs_and_reports_the_recipe_and_exit_code(tmp_path: Path) -> None:
    """The step's own bash script, with the repository's venv standing in for the one the install step makes,
    on a tiny ONNX model: the chosen recipe and exit code reach GITHUB_OUTPUT, build.md the step summary."""
    from tests.conftest import build_tiny_onnx

    require(shutil.which("bash"), "bash")
    model = build_tiny_onnx(tmp_path / "tiny.onnx")
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    (runner_temp / "slimserve-venv").symlink_to(Path(sys.executable).parent.parent)
    step = _build_step()
    inputs = {name: str(spec.get("default", "")) for name, spec in _action()["inputs"].items()}

    def run(**given: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
        values = {**inputs, **given}
        env = {key: re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: values[m.group(1)], value)
               for key, value in step["env"].items()}
        output, summary = tmp_path / "output.txt", tmp_path / "summary.md"
        output.write_text("")
        summary.write_text("")
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], capture_output=True, text=True, check=False,
                              cwd=tmp_path, timeout=900,
                              env={**os.environ, **env, "RUNNER_TEMP": str(runner_temp),
                                   "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                                   "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)})
        written = dict(line.split("=", 1) for line in output.read_text().splitlines())
        return proc, written, summary.read_text()

    proc, written, summary = run(model=str(model), recipes="fp32", **{"output-dir": "out"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert written == {"exit-code": "0", "recipe": "fp32"}, (written, proc.stdout, proc.stderr)
    assert summary == (tmp_path / "out" / "build.md").read_text() and summary
    assert "::notice" in proc.stdout  # --format github: the choice as a workflow annotation
    proc, written, summary = run(model=str(model), recipes="fp32", **{"output-dir": "miss", "max-cold-start-ms": "1"})
    assert proc.returncode == 0, proc.stderr  # the step reports; the action's last step fails the job
    assert written == {"exit-code": "1", "recipe": ""}, written
    assert "no candidate meets the budgets" in summary and "::error" in proc.stdout


def test_an_install_from_the_checkout_holds_every_package() -> None:
    """ci.md and the action install slimserve as a built wheel (not editable): a package missing from
    pyproject's explicit list would install fine and fail at the first import."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {str(init.parent.relative_to(ROOT)).replace("/", ".")
             for init in (ROOT / "slimserve").rglob("__init__.py") if "__pycache__" not in init.parts}
    found |= {f"slimserve.{sub}.{init.parent.name}" for sub in ("optimizer", "packagers", "profiles")
              for init in (ROOT / sub).glob("*/__init__.py")}  # rglob does not follow the links
    assert found - listed == set(), f"packages missing from pyproject's [tool.setuptools] packages: {found - listed}"
