"""Reading and cutting the text of an OpenAI chat.completion body, the gateway's own output shape."""

from typing import Any

import orjson


def _texts(message: dict[str, Any]) -> list[str]:
    texts = [part for part in (message.get("content"), message.get("reasoning_content"))
             if isinstance(part, str)]
    for tool_call in message.get("tool_calls") or ():
        function = tool_call.get("function") if isinstance(tool_call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            texts.append(arguments)
    return texts


def _messages(answer: object) -> list[dict[str, Any]]:
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return []
    return [choice["message"] for choice in answer["choices"]
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict)]


def answer_text_bytes(body: bytes) -> int:
    """UTF-8 bytes of the text an answer delivers: content, reasoning and tool-call arguments, all choices."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return len(body)
    return sum(len(text.encode()) for message in _messages(answer) for text in _texts(message))


def _cut(text: str, budget: int) -> str:
    return text.encode()[:max(budget, 0)].decode(errors="ignore")


def cut_answer(body: bytes, budget: int) -> bytes:
    """The answer with its text cut to `budget` UTF-8 bytes over all choices, in order.

    Content and reasoning are cut where the budget ends; a tool call whose arguments do not fit whole
    is dropped (half a JSON argument is no use to anyone). A choice that lost text finishes "length".
    """
    answer = orjson.loads(body)
    for choice in answer.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        before = _texts(message)
        for field in ("reasoning_content", "content"):
            if isinstance(text := message.get(field), str):
                message[field] = _cut(text, budget)
                budget -= len(message[field].encode())
        calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
        kept = []
        for call in calls:
            size = len(str((call.get("function") or {}).get("arguments") or "").encode())
            if size > budget:
                break
            kept.append(call)
            budget -= size
        if calls:
            message["tool_calls"] = kept or None
        if _texts(message) != before:
            choice["finish_reason"] = "length"
    return orjson.dumps(answer)
