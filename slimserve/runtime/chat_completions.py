"""OpenAI's chat completions (`POST /v1/chat/completions`) over the shipped generate loop.

Clients written for OpenAI's API (the `openai` package, LangChain, curl scripts) call a text-generation
deployment without an adapter. This module only translates: a request into the Inference API's
`inputs` + `parameters` that `task_generation` validates and runs, and its answer (or its stream of
token events) back into OpenAI's shapes. Standard library only; shipped beside `lambda_handler.py`.

Request fields: `messages` (required; `content` a string or a list of `{"type": "text", "text"}` parts),
`model` (accepted and echoed: a deployment serves one model), `max_completion_tokens` / `max_tokens`,
`temperature` (0 is greedy; absent: the model's generation_config, as the Inference API route does),
`top_p`, `seed`, `stop`, `n` (1 only), `stream`, `stream_options.include_usage`, `user` (ignored), and
two extensions other OpenAI-compatible servers accept: `top_k`, `repetition_penalty`.
`frequency_penalty` and `presence_penalty` are accepted only as 0 (OpenAI's additive penalties are not
transformers' multiplicative repetition penalty, and silently substituting one would change answers).
Anything else is a 400 naming the field, like the rest of the runtime; errors have OpenAI's shape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

if __package__:
    from .model_runtime import InputError
else:  # flat in the artifact
    from model_runtime import InputError  # type: ignore[no-redef]

FIELDS = ("messages", "model", "max_completion_tokens", "max_tokens", "temperature", "top_p", "seed", "stop",
          "n", "stream", "stream_options", "user", "top_k", "repetition_penalty", "frequency_penalty",
          "presence_penalty")
# transformers' finish reasons (task_generation's Run.reason) -> OpenAI's
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "length": "length", "time_limit": "length"}


def _content(message: Any, index: int) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise InputError(f'"messages"[{index}] must be an object like {{"role": "user", "content": "..."}}')
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only (this is a text model)
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InputError(f'"messages"[{index}].content parts must be {{"type": "text", "text": "..."}} '
                                 "(this model reads text only)")
            texts.append(part["text"])
        content = "".join(texts)
    extra = sorted(set(message) - {"role", "content", "name"})
    if extra:
        raise InputError(f'"messages"[{index}] has an unsupported field {extra[0]!r} (a message has role, content)')
    return {"role": message.get("role"), "content": content}


def translate(payload: Any) -> tuple[Any, dict[str, Any], bool, bool]:
    """(inputs, parameters, stream, include_usage) of a chat completion request, or an InputError."""
    if not isinstance(payload, dict):
        raise InputError('request must be a JSON object like {"messages": [{"role": "user", "content": "..."}]}')
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise InputError(f"unsupported field {unknown[0]!r} (this server accepts {', '.join(FIELDS)})")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError('"messages" must be a non-empty list of {"role": ..., "content": ...} objects')
    if payload.get("n", 1) != 1:
        raise InputError('"n" must be 1: one completion per request')
    for name in ("frequency_penalty", "presence_penalty"):
        if payload.get(name) not in (None, 0, 0.0):
            raise InputError(f'"{name}" is not supported (only 0); "repetition_penalty" is transformers\' penalty')
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise InputError('"stream" must be true or false')
    options = payload.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise InputError('"stream_options" may only hold "include_usage"')
    parameters: dict[str, Any] = {"details": True, "return_full_text": False}
    if payload.get("max_completion_tokens") is not None or payload.get("max_tokens") is not None:
        parameters["max_new_tokens"] = payload.get("max_completion_tokens", payload.get("max_tokens"))
    temperature = payload.get("temperature")
    if temperature is not None:
        parameters["temperature"] = temperature
        parameters["do_sample"] = not (isinstance(temperature, (int, float)) and temperature == 0)
    for name in ("top_p", "top_k", "seed", "repetition_penalty", "stop"):
        if payload.get(name) is not None:
            parameters[name] = payload[name]
    inputs = [_content(message, index) for index, message in enumerate(messages)]
    return inputs, parameters, stream, bool(options.get("include_usage", False))


def error(message: str, status: int) -> dict[str, Any]:
    """OpenAI's error body, which its clients read the message from (`{"error": {"message", "type", ...}}`)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(details: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(details["prompt_tokens"]), int(details["generated_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def new_id() -> str:
    return f"chatcmpl-{os.urandom(16).hex()}"  # uuid4's 122 random bits without importing uuid (~2 ms of every cold start)


def completion(answer: dict[str, Any], model_name: str) -> dict[str, Any]:
    """A `chat.completion` object from `task_generation`'s answer to one chat (details included)."""
    details = answer["details"]
    return {"id": new_id(), "object": "chat.completion", "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer["generated_text"]},
                         "logprobs": None, "finish_reason": FINISH_REASONS.get(details["finish_reason"], "stop")}],
            "usage": _usage(details)}


def chunks(events: Iterator[dict[str, Any]], model_name: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    """`chat.completion.chunk` objects from `task_generation.stream`'s token events: the role first, one
    chunk per token with text, then one with the finish reason, usage after it when asked for."""
    ident, created = new_id(), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created,
                                "model": model_name,
                                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = usage
        return body

    yield chunk({"role": "assistant", "content": ""}, None)
    for event in events:
        details = event.get("details")
        if event["token"]["text"]:
            yield chunk({"content": event["token"]["text"]}, None)
        if not details:
            continue
        yield chunk({}, FINISH_REASONS.get(details["finish_reason"], "stop"))
        if include_usage:
            final = chunk({}, None, _usage(details))
            final["choices"] = []
            yield final
