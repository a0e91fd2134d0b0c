"""A model's Jinja chat template, pre-rendered into plain strings the shipped runtime can join without Jinja.

The shipped handler may import only numpy, onnxruntime and tokenizers, so it cannot evaluate the folder's
`chat_template`. Most templates, though, wrap each message in text that depends only on its role and its
neighbours' roles (ChatML/Qwen, Llama 3, Zephyr, Phi-3, Gemma...). Here transformers' own
`apply_chat_template` renders probe conversations whose contents are sentinels, and the text around the
sentinels is read off as:

    start[role]                text before a conversation's first message (BOS, a default system prompt)
    between["a>b"]             text between a message of role a and the next one of role b
    end[role]                  text after the last message when a generation prompt is added

A conversation is then `start[r0] + c0 + between[r0>r1] + c1 + ... + end[r_last]` (contents stripped
first when the template trims them). The result is checked against transformers on held-out
conversations (several turns, with and without a system message, contents with newlines, braces,
unicode and surrounding spaces); a template that does not reproduce exactly gets no chat format, and
the handler then answers chat input with a 400 naming why. Role sequences the template refuses (e.g.
a system message for Mistral's) leave their transition out, and the handler refuses them too.

Known limit: a template that prints today's date (Llama 3.1/3.2) is frozen at optimize time.
"""

from __future__ import annotations

import itertools
from typing import Any

ROLES = ("system", "user", "assistant")
SENTINELS = ("QZXSENTA", "QZXSENTB", "QZXSENTC", "QZXSENTD")
CHECKS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("system", "You are terse.\nAnswer in {JSON}."), ("user", "  Hi there!  "), ("assistant", "Hello 👋"),
     ("user", "What's 2+2?\n")),
    (("user", "Bonjour, ça va ?"), ("assistant", "Oui.\n\nEt toi ?"), ("user", "{{ not jinja }}")),
    (("user", "single turn"),),
    (("system", "s"), ("user", "u")),
)


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = True) -> str | None:
    """transformers' rendering (text, not tokens) as the text-generation pipeline asks for it (a final
    assistant message is continued, anything else gets the generation prompt), or None when the template
    refuses the conversation."""
    continued = messages[-1]["role"] == "assistant" and not generation_prompt
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not continued,
                                             continue_final_message=continued)
    except Exception:  # noqa: BLE001  # templates raise anything (raise_exception, TemplateError, TypeError)
        return None
    return text if isinstance(text, str) else None


def _split(text: str, count: int) -> list[str] | None:
    """`text` cut at SENTINELS[0..count) in order: count + 1 pieces, or None if one is missing."""
    pieces, rest = [], text
    for sentinel in SENTINELS[:count]:
        if rest.count(sentinel) != 1:
            return None
        head, rest = rest.split(sentinel)
        pieces.append(head)
    return [*pieces, rest]


def render(chat: dict[str, Any], messages: list[dict[str, str]]) -> str | None:
    """The conversation as the pipeline renders it, from the pre-rendered strings (None: a role sequence
    the template does not accept): a final assistant message is continued (cut after its content, as
    transformers' continue_final_message), anything else ends with the generation prompt. The shipped
    copy is task_generation.render_chat; both must stay identical."""
    roles = [m["role"] for m in messages]
    if not roles or roles[0] not in chat["start"]:
        return None
    contents = [m["content"].strip() if chat["trim"] else m["content"] for m in messages]
    if chat["trim"] and roles[-1] == "assistant":  # continued: transformers cuts at a tag appended to it
        contents[-1] = messages[-1]["content"].lstrip()
    parts = [chat["start"][roles[0]], contents[0]]
    for (a, b), content in zip(itertools.pairwise(roles), contents[1:]):
        between = chat["between"].get(f"{a}>{b}")
        if between is None:
            return None
        parts += [between, content]
    if roles[-1] == "assistant":
        text = "".join(parts)
        return text.rstrip() if chat["trim"] else text
    if roles[-1] not in chat["end"]:
        return None
    return "".join([*parts, chat["end"][roles[-1]]])


def extract(tokenizer: Any) -> tuple[dict[str, Any] | None, str]:
    """(the pre-rendered chat format, "") or (None, why chat input cannot be served for this model)."""
    if not getattr(tokenizer, "chat_template", None):
        return None, "the model's tokenizer has no chat template"
    trimmed = _render(tokenizer, [{"role": "user", "content": f"  {SENTINELS[0]}  "}], True)
    if trimmed is None:
        return None, "the chat template refuses a single user message"
    trim = f"  {SENTINELS[0]}  " not in trimmed
    tables: dict[str, dict[str, str]] = {"start": {}, "between": {}, "end": {}}
    for length in (1, 2, 3):  # later probes fill transitions earlier ones could not reach (Mistral's)
        for roles in itertools.product(ROLES, repeat=length):
            messages = [{"role": role, "content": SENTINELS[i]} for i, role in enumerate(roles)]
            pieces = _split(_render(tokenizer, messages) or "", length)
            if pieces is None:
                continue
            keys = [("start", roles[0]), *(("between", f"{a}>{b}") for a, b in itertools.pairwise(roles)),
                    ("end", roles[-1])]
            if any(tables[t].get(k, piece) != piece for (t, k), piece in zip(keys, pieces)):
                continue  # text around a message that depends on more than its neighbours' roles
            for (table, key), piece in zip(keys, pieces):
                tables[table].setdefault(key, piece)
    start, between, end = tables["start"], tables["between"], tables["end"]
    chat = {"start": start, "between": between, "end": end, "trim": trim}
    if "user" not in start:
        return None, "the chat template's text around a user message could not be pre-rendered"
    for turns in CHECKS:
        for length in range(1, len(turns) + 1):  # every prefix: ending in a user turn and in an assistant one
            messages = [{"role": role, "content": content} for role, content in turns[:length]]
            want = _render(tokenizer, messages, generation_prompt=False)
            if want is not None and render(chat, messages) != want:
                return None, "the chat template is not a fixed wrapping of each message (it could not be pre-rendered)"
    return chat, ""
