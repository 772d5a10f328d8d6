"""The Responses front door's answer: the gateway's chat completion read back as a Response object,
and its chat chunk frames as Responses stream events (pure translation; gateway/responses_request.py
is the way in).

Output items: the answer's text is one `message` item with one `output_text` part (or a `refusal`
part), and each tool call a `function_call` item, in that order, as OpenAI orders them. Reasoning
text a provider returns is not shown: no reasoning item is made (the call still bills its tokens).
`status` is `completed`, or `incomplete` when the answer stopped at its output limit or at the
gateway's hold (finish_reason `length`, reason `max_output_tokens`) or at a content filter; a stream
that ends in an error is `failed`, with the error's message.

Events, each with a `sequence_number` from 0: `response.created`, `response.in_progress`, then for the
text `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`*,
`response.output_text.done`, `response.content_part.done`, `response.output_item.done`; for a tool
call `response.output_item.added`, `response.function_call_arguments.delta`*,
`response.function_call_arguments.done`, `response.output_item.done`; and last
`response.completed` (or `response.incomplete`, `response.failed`) carrying the whole Response with
its usage. The final Response is kept (`ResponseEventStream.final`) for the door to store.
"""

import time
from collections.abc import Mapping
from typing import Any

import orjson

from alumia.domain.usage import TokenUsage
from alumia.gateway.responses_request import ResponsesRequest, new_id
from alumia.providers.openai_shape import usage_from_openai
from alumia.sse import event_frame

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_usage(usage: TokenUsage) -> dict[str, Any]:
    """Responses' usage for the gateway's: input includes cache reads and writes, as OpenAI counts it."""
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cache_read_tokens,
                                     "cache_write_tokens": usage.cache_write_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.prompt_tokens + usage.output_tokens}


def response_object(request: ResponsesRequest, response_id: str, created_at: int, *, status: str,
                    output: list[dict[str, Any]], usage: TokenUsage | None = None,
                    incomplete: str | None = None, error: dict[str, str] | None = None,
                    model: str | None = None) -> dict[str, Any]:
    """The Response object: the request's settings repeated, the output, usage and status."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error, "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
        "model": model or request.model, "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": request.effort, "summary": None} if request.effort else None,
        "store": request.store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": request.text, "tool_choice": request.tool_choice, "tools": list(request.tools),
        "top_p": request.top_p if request.top_p is not None else 1.0, "truncation": "disabled",
        "metadata": request.metadata, "background": False,
        # Not nullable in OpenAI's schema: present only when known.
        **({"usage": response_usage(usage)} if usage is not None else {}),
        **({"user": request.user} if request.user is not None else {}),
        **({"safety_identifier": request.safety_identifier} if request.safety_identifier is not None else {}),
    }


def _status(finish_reason: Any) -> tuple[str, str | None]:
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    return ("incomplete", reason) if reason else ("completed", None)


def _message_item(item_id: str, text: str, refusal: str | None, status: str) -> dict[str, Any]:
    part = ({"type": "refusal", "refusal": refusal} if refusal is not None
            else {"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def answer_response(request: ResponsesRequest, response_id: str, created_at: int, completion: bytes,
                    provider: str) -> dict[str, Any]:
    """The Response for the gateway's chat.completion body (its first choice)."""
    body = orjson.loads(completion)
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    status, incomplete = _status(choice.get("finish_reason"))
    output: list[dict[str, Any]] = []
    text, refusal = message.get("content"), message.get("refusal")
    if (isinstance(text, str) and text) or isinstance(refusal, str):
        output.append(_message_item(new_id("msg"), text if isinstance(text, str) else "",
                                    refusal if isinstance(refusal, str) and not text else None, "completed"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name") or "",
                                 function.get("arguments") or "", "completed"))
    usage = usage_from_openai(body.get("usage"), provider)
    model = body.get("model")
    return response_object(request, response_id, created_at, status=status, output=output, usage=usage,
                           incomplete=incomplete, model=model if isinstance(model, str) else None)


def _sse(kind: str, event: dict[str, Any]) -> bytes:
    return event_frame(kind, event)


class ResponseEventStream:
    """Turns the gateway's chat chunk frames into Responses stream events (the module's docstring)."""

    def __init__(self, request: ResponsesRequest, response_id: str, created_at: int, provider: str) -> None:
        self.request, self.response_id, self.created_at = request, response_id, created_at
        self.provider = provider
        self.final: dict[str, Any] | None = None  # the Response the stream ended with
        self._sequence = 0
        self._buffer = b""
        self._started = False
        self._output: list[dict[str, Any]] = []  # items done, in order
        self._text: tuple[int, str, list[str]] | None = None  # (output index, item id, deltas) while open
        self._calls: dict[int, tuple[int, str, str, str, list[str]]] = {}  # chat index -> open call
        self._finish: Any = None
        self._usage: TokenUsage | None = None
        self._model: str | None = None

    @property
    def done(self) -> bool:
        """Whether the final event went out: nothing more follows it."""
        return self.final is not None

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return _sse(kind, event)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.request, self.response_id, self.created_at, status=status,
                               output=list(self._output), model=self._model, **extra)

    def feed(self, data: bytes) -> list[bytes]:
        """Events for some bytes of the gateway's stream (whole frames or parts of them)."""
        self._buffer += data
        events: list[bytes] = []
        while b"\n\n" in self._buffer and not self.done:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            for line in frame.split(b"\n"):
                if line.startswith(b"data:"):
                    events.extend(self._payload(line[5:].strip()))
        return events

    def start(self) -> list[bytes]:
        """response.created and response.in_progress, once."""
        if self._started:
            return []
        self._started = True
        response = self._response("in_progress")
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def close(self) -> list[bytes]:
        """response.failed when the gateway's stream ended without [DONE] or an error of its own."""
        if self.done:
            return []
        return self._fail("server_error", "the stream ended before the answer was complete")

    def _fail(self, code: str, message: str) -> list[bytes]:
        events = self.start()
        events.extend(self._close_items("incomplete"))
        self.final = self._response("failed", error={"code": code, "message": message}, usage=self._usage)
        events.append(self._event("response.failed", response=self.final))
        return events

    def _payload(self, payload: bytes) -> list[bytes]:
        if payload == b"[DONE]":
            return self._finish_response()
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(chunk, dict):
            return []
        if chunk.get("error") is not None:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            return self._fail("server_error", message if isinstance(message, str) else "the provider failed")
        events = self.start()
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self._model = chunk["model"]
        choices = chunk.get("choices") or ()
        if choices and isinstance(choices[0], dict):
            events.extend(self._choice(choices[0]))
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = usage_from_openai(chunk["usage"], self.provider)
        return events

    def _choice(self, choice: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            events.extend(self._text_delta(text))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events.extend(self._call_delta(call))
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            events.extend(self._close_items("completed"))
        return events

    def _text_delta(self, text: str) -> list[bytes]:
        events: list[bytes] = []
        if self._text is None:
            events.extend(self._close_calls("completed"))  # text after a call: the call is done
            index, item_id = len(self._output) + len(self._calls), new_id("msg")
            self._text = (index, item_id, [])
            item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
                    "content": []}
            events.append(self._event("response.output_item.added", output_index=index, item=item))
            events.append(self._event("response.content_part.added", item_id=item_id, output_index=index,
                                      content_index=0, part={"type": "output_text", "text": "",
                                                             "annotations": [], "logprobs": []}))
        index, item_id, deltas = self._text
        deltas.append(text)
        events.append(self._event("response.output_text.delta", item_id=item_id, output_index=index,
                                  content_index=0, delta=text, logprobs=[]))
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._calls:
            events.extend(self._close_text("completed"))
            index, item_id = len(self._output) + len(self._calls), new_id("fc")
            call_id, name = call.get("id") or new_id("call"), function.get("name") or ""
            self._calls[position] = (index, item_id, call_id, name, [])
            events.append(self._event("response.output_item.added", output_index=index,
                                      item=_call_item(item_id, call_id, name, "", "in_progress")))
        index, item_id, _call_id, _name, parts = self._calls[position]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            parts.append(arguments)
            events.append(self._event("response.function_call_arguments.delta", item_id=item_id,
                                      output_index=index, delta=arguments))
        return events

    def _close_text(self, status: str) -> list[bytes]:
        if self._text is None:
            return []
        index, item_id, deltas = self._text
        self._text = None
        text = "".join(deltas)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = _message_item(item_id, text, None, status)
        self._output.append(item)
        return [self._event("response.output_text.done", item_id=item_id, output_index=index,
                            content_index=0, text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item_id, output_index=index,
                            content_index=0, part=part),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _close_calls(self, status: str) -> list[bytes]:
        events: list[bytes] = []
        for index, item_id, call_id, name, parts in sorted(self._calls.values()):
            arguments = "".join(parts)
            item = _call_item(item_id, call_id, name, arguments, status)
            self._output.append(item)
            events.append(self._event("response.function_call_arguments.done", item_id=item_id,
                                      output_index=index, name=name, arguments=arguments))
            events.append(self._event("response.output_item.done", output_index=index, item=item))
        self._calls.clear()
        return events

    def _close_items(self, status: str) -> list[bytes]:
        # Whichever is open was opened last; close the text first when both are (it came first).
        return [*self._close_text(status), *self._close_calls(status)]

    def _finish_response(self) -> list[bytes]:
        events = self.start()
        events.extend(self._close_items("completed"))
        status, incomplete = _status(self._finish)
        self.final = self._response(status, usage=self._usage, incomplete=incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self.final))
        return events
