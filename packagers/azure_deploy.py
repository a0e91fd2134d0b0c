"""DEPLOY.md for the Azure Functions (Flex Consumption) package: the exact `az` commands, with the instance
memory and the function timeout `check` measured, the app settings the runtime reads, and how to call the
function with its key. Plain Azure CLI rather than a Bicep file: nothing here can validate Bicep offline,
and a template that was never deployed is worse than commands that say what they do."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from slimserve.packagers.lambda_target import LIMIT_ROWS, ZipArtifact
from slimserve.packagers.target import Target

if TYPE_CHECKING:
    from slimserve.profiles.rules import PlatformVerdict
    from slimserve.report import Report



def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _example(example_inputs: Any) -> str:
    example = json.dumps({"inputs": example_inputs}) if example_inputs is not None else '{"inputs": ["hello world"]}'
    example = example.replace("'", "\\u0027")  # it goes inside single quotes on the command line
    return example if len(example) <= 400 else '{"inputs": ["<base64 of an image file>"]}'


def _measured(memory: int, timeout_s: int, check: Report | None, verdict: PlatformVerdict | None) -> str:
    """Why the instance memory and functionTimeout are what they are: the check's numbers, or a warning."""
    if check is None or verdict is None:
        return (f"No `check` ran (`--no-check`): `--instance-memory {memory}` is the plan's default and "
                f"`functionTimeout` ({timeout_s} s) a default, not measurements. Run `slimserve check "
                "--platform azure-functions-flex` to measure them.")
    cold = check.cold_start
    lines = [f"`check` measured this package's runtime in fresh Python {cold.python} processes on this machine: "
             f"init + first request {cold.total_ms:,.0f} ms (import {cold.import_ms:,.0f} ms, model load {cold.load_ms:,.0f} ms, "
             f"first inference {cold.first_inference_ms:,.0f} ms), peak RSS {check.peak_rss_mb:,.0f} MB"
             + (f" after the largest request the limits accept ({cold.worst_request}, {cold.worst_ms:,.0f} ms)"
                if cold.worst_ms is not None else "") + ". The Functions host's and the Python worker's own "
             "start come on top of it on Azure."]
    memory_finding = verdict.finding("memory")
    if memory_finding is not None:
        lines.append(f"Instance memory: {memory_finding.reason} ({memory_finding.status}).")
    if verdict.projection is not None:
        p = verdict.projection
        lines.append(f"At {p.memory_mb:,} MB an instance has about {p.vcpus:g} vCPU, so a cold start is projected "
                     f"at ~{p.total_ms:,.0f} ms ({p.formula}; an estimate).")
    if verdict.timeout_s is not None:
        lines.append(f"`functionTimeout` {timeout_s} s: (projected init + the worst accepted request at this "
                     "memory) × 3, at least 10 s. HTTP requests are cut at 230 s by Azure's load balancer "
                     "whatever it says.")
    if not verdict.fits:
        failing = "; ".join(f.reason for f in verdict.findings if f.status == "fail")
        lines.append(f"**The check says this does not fit Flex Consumption:** {failing}")
    return "\n".join(lines)


def _limits(limits: dict[str, int]) -> str:
    rows = "\n".join(f"| `{key}` | {limits[key]:,} | `{env}` | {what} |" for key, env, what in LIMIT_ROWS
                     if key in limits)
    return f"""| limit | value | app setting | what it bounds |
|---|---:|---|---|
{rows}
| body | 6 MiB | `SLIMSERVE_MAX_BODY_BYTES` | request body bytes, refused before parsing |"""


def deploy_notes(target: Target, function: ZipArtifact, *, memory: int, timeout_s: int,
                 limits: dict[str, int] | None = None, check: Report | None = None,
                 verdict: PlatformVerdict | None = None, task_name: str = "tensor",
                 example_inputs: Any = None) -> str:
    from slimserve.tasks import BY_NAME

    task = BY_NAME.get(task_name, BY_NAME["tensor"])
    example = _example(example_inputs)
    python = target.python
    image_call = ("""
An image can also be POSTed as it is: `-H "content-type: image/jpeg" --data-binary @photo.jpg` instead of
the JSON body.
""" if task.family == "image" else "")
    return f"""# Deploying this model to Azure Functions (Flex Consumption)

| file | zipped | unzipped |
|---|---|---|
| function.zip | {_mib(function.bytes)} | {_mib(function.unzipped_bytes)} |

A Python {python} function app for Linux x86_64 in the v2 programming model: `function_app.py` registers
`predict` (`POST /api/predict`) and `health` (`GET /api/health`), both behind the function key. The
dependencies are already in `.python_packages/lib/site-packages` (numpy, onnxruntime and the tokenizer or
image library, slimmed, bytecode for Python {python} only), so the package deploys as it is: no remote build.
Flex Consumption runs it from the deployed package; do not set `WEBSITE_RUN_FROM_PACKAGE`.

## With the Azure CLI (2.60 or later)

```sh
RG=my-model-rg
LOCATION=eastus            # az functionapp list-flexconsumption-locations --output table
APP=my-model-$RANDOM       # globally unique
STORAGE=mymodel$RANDOM     # 3-24 lowercase letters and digits, globally unique

az group create --name "$RG" --location "$LOCATION"
az storage account create --name "$STORAGE" --resource-group "$RG" --location "$LOCATION" \\
    --sku Standard_LRS --allow-blob-public-access false
az functionapp create --resource-group "$RG" --name "$APP" --storage-account "$STORAGE" \\
    --flexconsumption-location "$LOCATION" --runtime python --runtime-version {python} \\
    --instance-memory {memory}
az functionapp config appsettings set --resource-group "$RG" --name "$APP" \\
    --settings OPENBLAS_NUM_THREADS=1 SLIMSERVE_LOG=json
az functionapp scale config set --resource-group "$RG" --name "$APP" \\
    --trigger-type http --trigger-settings perInstanceConcurrency=1
az functionapp deployment source config-zip --resource-group "$RG" --name "$APP" \\
    --src function.zip --build-remote false
```

`--instance-memory {memory}` is what `check` measured this model needs (below). `perInstanceConcurrency=1`:
the memory was measured for one request at a time, and each request already uses every vCPU of the
instance through onnxruntime's threads; raise it only with the instance memory. `OPENBLAS_NUM_THREADS=1`:
numpy would start a BLAS thread pool at import that inference never uses.

## Calling it

```sh
HOST=$(az functionapp show --resource-group "$RG" --name "$APP" --query defaultHostName --output tsv)
KEY=$(az functionapp keys list --resource-group "$RG" --name "$APP" --query functionKeys.default --output tsv)
curl -sS -X POST "https://$HOST/api/predict" -H "x-functions-key: $KEY" \\
    -H "content-type: application/json" -d '{example}'
curl -sS "https://$HOST/api/health" -H "x-functions-key: $KEY"
```
{image_call}
This model's task is `{task.name}`: requests look like `{task.request}` and answers like `{task.response}`.
A bad request is a 400 and a request over a limit a 413, both with `{{"error": "..."}}`; a request without
the key is a 401 from the Functions host.

## What was measured

{_measured(memory, timeout_s, check, verdict)}

## Limits per request

{_limits(limits or {})}

Each limit is an app setting (`az functionapp config appsettings set ... --settings NAME=VALUE`). Raising
one makes requests larger than the ones measured: raise the instance memory with it, or rerun `check`
with the limit written into the model's `slimserve.json`.

## Logs

The handler prints one JSON line when the model loads (load time, limits) and one per request (invocation
id, route, status, batch size, duration, outcome); the Functions host sends them to Application Insights
as traces when the app has it (`az monitor app-insights component create`, then the
`APPLICATIONINSIGHTS_CONNECTION_STRING` app setting). `SLIMSERVE_LOG=off` silences them.
"""
