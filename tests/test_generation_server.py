"""Text generation through the container server as shipped (http_app.py + waitress + the runtime closure,
python3.12 on 127.0.0.1): server-sent events read off the socket, concurrent streams that keep their own
KV caches, and OpenAI's chat completions read by the real `openai` client. Every token is compared with
transformers' `generate(do_sample=False)` on the original PyTorch model.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from slimserve.packagers.interpreters import find_python
from tests.conftest import require, run_cli
from tests.test_family_generation import CHATML, CHATS, NEW_TOKENS, PROMPTS, _build, _generate, _generate_chat
from tests.test_http_server_abuse import Server

PYTHON = "3.12"


@pytest.fixture(scope="module")
def sites() -> list[Path]:
    """The runtime closure and waitress exactly as the Cloud Run image ships them (/app/packages)."""
    from slimserve.packagers.closure import build_closure
    from slimserve.packagers.container import _server_site, platform_spec
    from slimserve.packagers.target import Target

    require(find_python(PYTHON), f"python{PYTHON} (pyenv install {PYTHON})")
    target = Target(PYTHON)
    return [build_closure(target, True), *_server_site(target, platform_spec("gcp-cloud-run"))]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """(slimserve's fp32 output, the PyTorch model, its tokenizer) for a tiny random Llama with ChatML."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _build(tmp_path_factory.mktemp("llama") / "model", "llama", chat_template=CHATML)
    out = tmp_path_factory.mktemp("llama-fp32") / "out"
    result = run_cli("optimize", str(folder), "-o", str(out), "--recipe", "fp32", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return out, model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def server(sites: list[Path], llama: tuple[Path, Any, Any], tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Server]:
    """Two generate loops may run at once (SLIMSERVE_CONCURRENCY=2), so concurrent streams interleave."""
    srv = Server(sites, llama[0], tmp_path_factory.mktemp("server"), {"SLIMSERVE_CONCURRENCY": "2"})
    yield srv
    srv.stop()


def stream(server: Server, path: str, body: Any) -> tuple[int, dict[str, str], list[Any]]:
    """POST `body` and read the answer as server-sent events, one `data:` line at a time off the socket."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status != 200:
            return resp.status, headers, [json.loads(resp.read())]
        events: list[Any] = []
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
            else:
                assert line == "", line  # events are separated by one blank line
        return resp.status, headers, events
    finally:
        conn.close()


def test_generation_streams_server_sent_events_token_by_token(server: Server, llama: tuple[Path, Any, Any]) -> None:
    """`"stream": true` answers text/event-stream, chunked (no Content-Length: sent while generating), one
    text-generation-inference event per token: transformers' greedy ids, texts adding up to the answer."""
    _out, model, tokenizer = llama
    status, headers, events = stream(server, "/", {"inputs": PROMPTS[1], "parameters": {"max_new_tokens": NEW_TOKENS},
                                                   "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    assert [e["token"]["id"] for e in events] == _generate(model, tokenizer, PROMPTS[1], do_sample=False)
    assert all(e["generated_text"] is None for e in events[:-1])
    whole = server.request("POST", "/predict", {"inputs": PROMPTS[1], "parameters": {"max_new_tokens": NEW_TOKENS}})
    assert whole[0] == 200
    assert "".join(e["token"]["text"] for e in events) == events[-1]["generated_text"] == whole[1][0]["generated_text"]
    assert events[-1]["details"]["finish_reason"] == "length"


def test_concurrent_streams_keep_their_own_caches(server: Server, llama: tuple[Path, Any, Any]) -> None:
    """Ten streams at once, two generate loops running together: each is exactly what generate gives alone."""
    _out, model, tokenizer = llama
    expected = {p: _generate(model, tokenizer, p, do_sample=False) for p in PROMPTS}
    requests = PROMPTS * 2
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        answers = list(pool.map(lambda p: stream(server, "/predict", {"inputs": p, "stream": True,
                                                                      "parameters": {"max_new_tokens": NEW_TOKENS}}),
                                requests))
    for prompt, (status, _headers, events) in zip(requests, answers):
        assert status == 200
        assert [e["token"]["id"] for e in events] == expected[prompt], prompt


def test_bad_streaming_requests_are_400s_before_any_event(server: Server) -> None:
    for body, message in [({"inputs": "Hi", "stream": True, "parameters": {"top_p": 3}}, "top_p"),
                          ({"inputs": "Hi", "stream": "yes"}, '"stream" must be true or false'),
                          ({"inputs": "Hi", "stream": True, "parameters": {"max_new_tokens": 10_000}},
                           "max_new_tokens")]:
        status, headers, events = stream(server, "/", body)
        assert status in (400, 413) and headers["content-type"] == "application/json", body
        assert message in events[0]["error"], events
    status, body = server.request("GET", "/health")  # and the server is still there, its slots free
    assert status == 200 and body["task"] == "text-generation"


def _client(server: Server) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=30)


def test_openai_client_reads_chat_completions(server: Server, llama: tuple[Path, Any, Any]) -> None:
    """The real `openai` client, non-streamed: the assistant message is the pipeline's chat answer
    (transformers' template and greedy ids), with usage and a finish reason."""
    _out, model, tokenizer = llama
    chat = CHATS[2]
    reply = _client(server).chat.completions.create(model="tiny-llama", messages=chat, temperature=0,
                                                    max_tokens=NEW_TOKENS)
    ids = _generate_chat(model, tokenizer, chat)
    assert reply.object == "chat.completion" and reply.model == "tiny-llama"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == tokenizer.decode(ids, skip_special_tokens=True)
    assert reply.choices[0].finish_reason == "length"
    prompt_tokens = len(tokenizer.apply_chat_template(chat, add_generation_prompt=True))
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, NEW_TOKENS)


def test_openai_client_streams_chat_completions(server: Server, llama: tuple[Path, Any, Any]) -> None:
    """Streamed: the role first, the content in pieces adding up to the non-streamed answer, one finish
    reason, usage on a last chunk with no choices when asked for, and the stream ends ([DONE])."""
    client = _client(server)
    chat = CHATS[0]
    whole = client.chat.completions.create(model="m", messages=chat, temperature=0, max_tokens=NEW_TOKENS)
    chunks = list(client.chat.completions.create(model="m", messages=chat, temperature=0, max_tokens=NEW_TOKENS,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == NEW_TOKENS
    status, _headers, events = stream(server, "/v1/chat/completions", {"messages": chat, "stream": True})
    assert status == 200 and events[-1] == "[DONE]"


def test_openai_client_gets_400s_for_what_is_not_supported(server: Server) -> None:
    import openai

    client = _client(server)
    for extra, message in [({"n": 2}, '"n" must be 1'), ({"frequency_penalty": 0.5}, "frequency_penalty"),
                           ({"temperature": -1}, "temperature")]:
        with pytest.raises(openai.BadRequestError, match=message):
            client.chat.completions.create(model="m", messages=CHATS[0], **extra)
    with pytest.raises(openai.BadRequestError, match="unsupported field 'tools'"):
        client.chat.completions.create(model="m", messages=CHATS[0],
                                       tools=[{"type": "function", "function": {"name": "f"}}])
    with pytest.raises(openai.BadRequestError, match="role must be"):
        client.chat.completions.create(model="m", messages=[{"role": "robot", "content": "Hi"}])
