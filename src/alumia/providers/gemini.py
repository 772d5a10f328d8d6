"""The Gemini wire format: generateContent and streamGenerateContent?alt=sse.

A pure translator between OpenAI chat completions and Gemini's GenerateContent. The key travels only
in the ``x-goog-api-key`` header, never in the URL or the body.

Choices the references leave open:

* finishReason RECITATION → ``content_filter`` (the answer was withheld for quoting a source, as a
  filter would withhold it) and OTHER → ``stop``. Of the newer reasons, IMAGE_PROHIBITED_CONTENT,
  IMAGE_RECITATION and MODEL_ARMOR → ``content_filter``; any other unlisted reason → ``stop``.
* An http(s) image URL becomes ``fileData`` with the MIME type guessed from the path's extension, or
  ``image/jpeg`` when the extension says nothing.
* A tool message whose tool_call_id matches no earlier assistant tool call is named after the id.
* Tool-call arguments that are not a JSON object are sent as ``{"arguments": <the raw string>}``.
* Tool parameters go in ``parametersJsonSchema``: OpenAI tools carry JSON Schema (``const``, type
  arrays, ``$schema``...), which Gemini's OpenAPI-subset ``parameters`` field rejects.
* Thought signatures: Gemini 3 rejects a history ``functionCall`` that lacks the thoughtSignature the
  model sent with it, and OpenAI tool calls have no field for one. The signature therefore rides in
  the tool-call id (``<id>__thought__<url-safe base64>``) and is restored on the next request. A model
  turn whose calls carry no signature (another model's calls, edited history) gets Google's documented
  placeholder on its first call, except on gemini-1.x/2.x models.
* Thinking: ``generationConfig.thinkingConfig`` is read from the OpenAI body the way Google's own
  OpenAI-compatible endpoint takes it: ``extra_body.google.thinking_config`` (``thinking_budget``,
  ``include_thoughts``; what the Anthropic door's `thinking` becomes), else ``reasoning_effort`` by
  Google's mapping (none 0, low 1,024, medium 8,192, high 24,576 tokens). Thoughts come back as
  ``reasoning_content``.
* response_format: ``responseMimeType: application/json``, and for json_schema the schema in
  ``responseJsonSchema`` as Gemini takes it (providers/gemini_schema.py).
* ``n`` is ``candidateCount``: each candidate is a choice (its ``index``, else its place), streamed or
  not; maxOutputTokens bounds each candidate, as the hold (n times the limit) assumes.
* ``logprobs`` is ``responseLogprobs`` and ``top_logprobs`` is ``logprobs`` (the count); a candidate's
  ``logprobsResult`` (chosenCandidates beside topCandidates, step by step) comes back as the choice's
  OpenAI ``logprobs.content``, each token with its UTF-8 bytes.
"""

import base64
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import orjson

from alumia.domain.usage import TokenUsage
from alumia.providers.base import ChatRequest, UpstreamError, UpstreamRequest, has_counts
from alumia.providers.errors import error_message
from alumia.providers.gemini_schema import gemini_schema
from alumia.providers.openai_shape import error_frame
from alumia.redact import redact
from alumia.sse import data_frame

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "LANGUAGE", "IMAGE_SAFETY",
                     "RECITATION", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"),
                    "content_filter"),
}
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 429: "rate_limit_error"}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_SIGNATURE_SEP = "__thought__"
_PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"
_NO_SIGNATURES = re.compile(r"gemini-[12][.-]")
# Google's OpenAI-compatible endpoint's thinking budget for each reasoning_effort.
EFFORT_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
_TO_URLSAFE = str.maketrans("+/", "-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


# --- request -------------------------------------------------------------------------------------


def _media_part(url: str, default_mime: str = "image/jpeg") -> dict[str, Any]:
    """inlineData for a data: URI, fileData for anything else."""
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        mime, *params = header.split(";")
        if "base64" not in params:
            data = base64.b64encode(unquote_to_bytes(data)).decode()
        return {"inlineData": {"mimeType": mime or default_mime, "data": data}}
    mime = mimetypes.guess_type(urlsplit(url).path)[0] or default_mime
    return {"fileData": {"fileUri": url, "mimeType": mime}}


def _parts(content: Any) -> list[dict[str, Any]]:
    """Gemini parts for an OpenAI message content (a string or a list of content parts)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for item in content if isinstance(content, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in ("text", "refusal") and item.get(kind):
            parts.append({"text": item[kind]})
        elif kind == "image_url":
            image = item.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                parts.append(_media_part(url))
        elif kind == "input_audio" and isinstance(item.get("input_audio"), dict):
            audio = item["input_audio"]
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}",
                                         "data": audio.get("data", "")}})
        elif kind == "file" and isinstance((item.get("file") or {}).get("file_data"), str):
            parts.append(_media_part(item["file"]["file_data"], "application/octet-stream"))
    return parts


def _text(content: Any) -> str:
    """The text of a content that should only hold text (tool results)."""
    return "".join(part.get("text", "") for part in _parts(content))


def _args(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": str(arguments)}


def _function_call_part(call: Mapping[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A functionCall part for an assistant tool call, with its thought signature if the id has one."""
    function = call.get("function") or {}
    call_id = str(call.get("id") or "")
    name = str(function.get("name") or "")
    names[call_id] = name
    part: dict[str, Any] = {"functionCall": {"name": name, "args": _args(function.get("arguments"))}}
    signature = call_id.partition(_SIGNATURE_SEP)[2]
    if signature:
        part["thoughtSignature"] = signature.translate(_FROM_URLSAFE) + "=" * (-len(signature) % 4)
    return part


def _contents(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system parts and the alternating user/model contents for an OpenAI message list."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name; OpenAI tool messages carry no name
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(message.get("content")))
            continue
        if role == "assistant":
            turn, parts = "model", _parts(message.get("content"))
            parts += [_function_call_part(call, names) for call in message.get("tool_calls") or ()
                      if isinstance(call, dict)]
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            turn, parts = "user", [{"functionResponse": {
                "name": names.get(call_id, call_id), "response": {"output": _text(message.get("content"))}}}]
        else:
            turn, parts = "user", _parts(message.get("content"))
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def _add_placeholder_signatures(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        calls = [part for part in content["parts"] if "functionCall" in part]
        if calls and not any("thoughtSignature" in part for part in content["parts"]):
            calls[0]["thoughtSignature"] = _PLACEHOLDER_SIGNATURE


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, dict):
            continue
        declaration = {"name": function.get("name", "")}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_MODES[choice]}}
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if name:
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None


def _thinking_config(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """generationConfig.thinkingConfig for the OpenAI body (the module's docstring), None for none."""
    extra = body.get("extra_body")
    google = extra.get("google") if isinstance(extra, Mapping) else None
    asked = google.get("thinking_config") if isinstance(google, Mapping) else None
    config: dict[str, Any] = {}
    if isinstance(asked, Mapping):
        budget, include = asked.get("thinking_budget"), asked.get("include_thoughts")
        if type(budget) is int:
            config["thinkingBudget"] = budget
        if type(include) is bool:
            config["includeThoughts"] = include
    elif body.get("reasoning_effort") in EFFORT_BUDGETS:
        config["thinkingBudget"] = EFFORT_BUDGETS[body["reasoning_effort"]]
    return config or None


def _generation_config(body: Mapping[str, Any], limit: int, choices: int = 1) -> dict[str, Any]:
    config: dict[str, Any] = {"maxOutputTokens": limit}
    if choices > 1:
        config["candidateCount"] = choices
    if body.get("logprobs") is True or body.get("top_logprobs") is not None:
        config["responseLogprobs"] = True
        if body.get("top_logprobs") is not None:
            config["logprobs"] = body["top_logprobs"]
    if thinking := _thinking_config(body):
        config["thinkingConfig"] = thinking
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if response_format["type"] == "json_schema" and schema is not None:
            config["responseJsonSchema"] = gemini_schema(schema)
    return config


# --- response ------------------------------------------------------------------------------------


def _finish_reason(reason: str | None, called: bool) -> str:
    reason = reason or "STOP"
    return "tool_calls" if called and reason == "STOP" else _FINISH_REASONS.get(reason, "stop")


def _tool_call(part: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call for a functionCall part; the id is generated unless Gemini sent one."""
    call = part["functionCall"]
    call_id = call.get("id") or f"call_{secrets.token_hex(12)}"
    if part.get("thoughtSignature"):
        call_id += _SIGNATURE_SEP + str(part["thoughtSignature"]).translate(_TO_URLSAFE).rstrip("=")
    arguments = orjson.dumps(call.get("args") or {}).decode()
    return {"id": call_id, "type": "function",
            "function": {"name": call.get("name", ""), "arguments": arguments}}


def _read_parts(candidate: Mapping[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """The answer text, the reasoning text and the functionCall parts of one candidate."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            calls.append(part)
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else text).append(part["text"])
    return "".join(text), "".join(thoughts), calls


def _usage(meta: Mapping[str, Any] | None) -> tuple[dict[str, Any], TokenUsage]:
    """OpenAI usage and ours: billed input = prompt + tool-use prompt, output = candidates + thoughts."""
    meta = meta or {}
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    cached = int(meta.get("cachedContentTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    output = int(meta.get("candidatesTokenCount") or 0) + thoughts
    openai = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
              "prompt_tokens_details": {"cached_tokens": cached},
              "completion_tokens_details": {"reasoning_tokens": thoughts}}
    return openai, TokenUsage(input_tokens=max(0, prompt - cached), output_tokens=output,
                              cache_read_tokens=cached, reasoning_tokens=thoughts)


def _token_logprob(entry: Any) -> dict[str, Any]:
    token = entry.get("token") if isinstance(entry, Mapping) else None
    token = token if isinstance(token, str) else ""
    logprob = entry.get("logProbability") if isinstance(entry, Mapping) else None
    return {"token": token, "logprob": float(logprob) if isinstance(logprob, int | float) else 0.0,
            "bytes": list(token.encode())}


def _logprobs(candidate: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenAI's choice `logprobs` for a candidate's logprobsResult; None when it has none."""
    result = candidate.get("logprobsResult")
    if not isinstance(result, Mapping):
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    content = []
    for step, entry in enumerate(chosen if isinstance(chosen, list) else ()):
        top = tops[step] if isinstance(tops, list) and step < len(tops) else None
        alternatives = top.get("candidates") if isinstance(top, Mapping) else None
        content.append({**_token_logprob(entry),
                        "top_logprobs": [_token_logprob(alt) for alt in alternatives or ()]})
    return {"content": content, "refusal": None}


def _index(candidate: Mapping[str, Any], position: int) -> int:
    index = candidate.get("index")
    return index if type(index) is int and index >= 0 else position


def _choice(candidate: Mapping[str, Any], position: int) -> dict[str, Any]:
    """One OpenAI choice of a non-streamed answer for one Gemini candidate."""
    text, thoughts, calls = _read_parts(candidate)
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = [_tool_call(part) for part in calls]
    if thoughts:
        message["reasoning_content"] = thoughts
    return {"index": _index(candidate, position), "message": message,
            "finish_reason": _finish_reason(candidate.get("finishReason"), bool(calls)),
            "logprobs": _logprobs(candidate)}


def _completion_id(response: Mapping[str, Any]) -> str:
    return f"chatcmpl-{response.get('responseId') or secrets.token_hex(12)}"


def _google_error(data: Any) -> dict[str, Any]:
    """The `error` object of a Google RPC body, unwrapping the one-element array form."""
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _retry_delay(details: list[object]) -> str | None:
    for detail in details:
        if not isinstance(detail, dict) or detail.get("@type") != _RETRY_INFO:
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(max(0, math.ceil(float(delay[:-1]))))
            except ValueError:
                return None
    return None


class GeminiStreamTranslator:
    """GenerateContentResponse chunks in, OpenAI chat.completion.chunk frames out.

    Each candidate is a choice (`n`, candidateCount): its first delta carries the role, its tool calls
    are numbered on their own, and the stream has ended properly once every candidate asked for has
    sent its finishReason (or the prompt was blocked).
    """

    def __init__(self, request: ChatRequest) -> None:
        self.model = request.model
        self.include_usage = request.include_usage
        self.created = int(time.time())
        self.id: str | None = None
        self.usage: TokenUsage | None = None
        self.finished = False
        self._openai_usage: dict[str, Any] | None = None
        self._choices = request.choices
        self._started: set[int] = set()
        self._ended: set[int] = set()
        self._calls: dict[int, int] = {}  # choice index -> tool calls streamed so far

    def _frame(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk: dict[str, Any] = {"id": self.id or _completion_id({}), "object": "chat.completion.chunk",
                                 "created": self.created, "model": self.model, "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage
        return data_frame(chunk)

    def _delta(self, index: int, delta: dict[str, Any], finish_reason: str | None = None,
               logprobs: dict[str, Any] | None = None) -> bytes:
        if index not in self._started:
            delta = {"role": "assistant", **delta}
            self._started.add(index)
        return self._frame([{"index": index, "delta": delta, "finish_reason": finish_reason,
                             "logprobs": logprobs}])

    def _candidate(self, candidate: Mapping[str, Any], position: int) -> list[bytes]:
        index = _index(candidate, position)
        if index in self._ended:
            return []
        text, thoughts, calls = _read_parts(candidate)
        delta: dict[str, Any] = {}
        if thoughts:
            delta["reasoning_content"] = thoughts
        if text:
            delta["content"] = text
        if calls:
            done = self._calls.get(index, 0)
            delta["tool_calls"] = [{"index": done + n, **_tool_call(part)} for n, part in enumerate(calls)]
            self._calls[index] = done + len(calls)
        logprobs = _logprobs(candidate)
        frames = [self._delta(index, delta, logprobs=logprobs)] if delta or logprobs else []
        if reason := candidate.get("finishReason"):
            self._ended.add(index)
            frames.append(self._delta(index, {}, _finish_reason(reason, self._calls.get(index, 0) > 0)))
        return frames

    def feed(self, payload: bytes) -> list[bytes]:
        """Frames for one GenerateContentResponse chunk (or an in-band error frame for an error object)."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return []
        if error := _google_error(data):
            return [_error_frame(error)]
        if not isinstance(data, dict):
            return []
        if self.id is None:
            self.id = _completion_id(data)
        if data.get("usageMetadata"):
            # Each chunk repeats the running totals: the last one wins, nothing is summed.
            self._openai_usage, self.usage = _usage(data["usageMetadata"])
        if self.finished:
            return []
        candidates = data.get("candidates") or []
        if not candidates:
            if (data.get("promptFeedback") or {}).get("blockReason"):
                self.finished = True
                return [self._delta(0, {}, "content_filter")]
            return []
        frames = [frame for i, candidate in enumerate(candidates) if isinstance(candidate, Mapping)
                  for frame in self._candidate(candidate, i)]
        self.finished = len(self._ended) >= self._choices
        return frames

    def close(self) -> list[bytes]:
        """The usage chunk, when the client asked for it and Gemini reported usage."""
        if self.include_usage and self._openai_usage is not None:
            return [self._frame([], self._openai_usage)]
        return []


def _error_frame(error: Mapping[str, Any]) -> bytes:
    status = error.get("code")
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = "the provider reported an error"
    return error_frame(redact(message)[:500],
                       error.get("status") or (str(status) if status is not None else None),
                       kind=_ERROR_TYPES.get(status, "api_error") if isinstance(status, int) else "api_error")


class GeminiAdapter:
    """Google's Gemini API (generativelanguage.googleapis.com/v1beta)."""

    def build(self, base_url: str, request: ChatRequest, key: str, max_output_tokens: int) -> UpstreamRequest:
        """POST models/{model}:generateContent, or :streamGenerateContent?alt=sse, with the key in a header.

        generationConfig.maxOutputTokens is always `max_output_tokens`, the limit the hold was sized
        for (the client's or the model's), so Gemini's own default can never exceed what was held.
        """
        body = request.body
        system, contents = _contents(body.get("messages"))
        if not _NO_SIGNATURES.search(request.model):
            _add_placeholder_signatures(contents)
        out: dict[str, Any] = {"contents": contents}
        if system:
            out["systemInstruction"] = {"parts": system}
        if tools := _tools(body.get("tools")):
            out["tools"] = tools
        if tool_config := _tool_config(body.get("tool_choice")):
            out["toolConfig"] = tool_config
        out["generationConfig"] = _generation_config(body, max_output_tokens, request.choices)
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return UpstreamRequest(
            url=f"{base_url}/models/{quote(request.model, safe='')}:{method}",
            headers={"x-goog-api-key": key, "content-type": "application/json"},
            body=orjson.dumps(out),
        )

    def parse_response(self, body: bytes, request: ChatRequest) -> tuple[bytes, TokenUsage | None]:
        """The OpenAI chat.completion for a GenerateContentResponse, and its usage.

        The usage is complete with promptTokenCount and candidatesTokenCount; Gemini leaves the
        latter out only when there is no candidate at all (a blocked prompt), so that counts too.
        Otherwise the usage is None and the body has none.
        """
        data = orjson.loads(body)
        candidates = data.get("candidates") or []
        if candidates:
            choices = sorted((_choice(candidate, i) for i, candidate in enumerate(candidates)),
                             key=lambda choice: choice["index"])
        else:
            blocked = (data.get("promptFeedback") or {}).get("blockReason")
            choices = [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None},
                        "finish_reason": "content_filter" if blocked else "stop", "logprobs": None}]
        completion = {"id": _completion_id(data), "object": "chat.completion", "created": int(time.time()),
                      "model": request.model, "choices": choices}
        meta = data.get("usageMetadata")
        if not has_counts(meta, "promptTokenCount", *(("candidatesTokenCount",) if candidates else ())):
            return orjson.dumps(completion), None
        completion["usage"], usage = _usage(meta)
        return orjson.dumps(completion), usage

    def stream_translator(self, request: ChatRequest) -> GeminiStreamTranslator:
        """A translator for one streamGenerateContent?alt=sse response."""
        return GeminiStreamTranslator(request)

    def parse_error(self, provider: str, status: int, body: bytes,
                    headers: Mapping[str, str]) -> UpstreamError:
        """A Google RPC error; a rejected key (400 API_KEY_INVALID) becomes 401, RetryInfo the retry_after."""
        message, code = error_message(body)
        try:
            error = _google_error(orjson.loads(body))
        except orjson.JSONDecodeError:
            error = {}
        raw_details = error.get("details")
        details = raw_details if isinstance(raw_details, list) else []
        if any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID" for d in details):
            status = 401
        return UpstreamError(provider=provider, status=status, message=message,
                             code=error.get("status") or code,
                             retry_after=headers.get("retry-after") or _retry_delay(details))

    def key_check(self, base_url: str, key: str) -> UpstreamRequest:
        """GET {base}/models with the key in its header (never in the URL)."""
        return UpstreamRequest(url=f"{base_url}/models", headers={"x-goog-api-key": key})
