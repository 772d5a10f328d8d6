"""The Gemini generateContent wire format, as the simulator speaks it for provider `gemini`.

Served under the provider's prefix (base URL ``http://HOST:PORT/gemini/v1beta``):
``POST /models/{model}:generateContent``, ``POST /models/{model}:streamGenerateContent?alt=sse`` (without
``alt=sse``: the same chunks as one streamed JSON array, as Gemini does) and ``GET /models``. The key
comes in ``x-goog-api-key`` or, as Gemini also allows, in ``?key=`` (the header wins when both are
sent); either way the call log keeps only its hash. A missing key or one containing "invalid" gets
Gemini's **400** ``API_KEY_INVALID`` answer (`alumia.sim.errors.BAD_KEY`). The model is the one in the
URL; other errors are Google RPC errors (`alumia.sim.errors.google_error`).

Request fields are read in Gemini's JSON names (``systemInstruction``, ``generationConfig``,
``maxOutputTokens``, ``toolConfig``...) or their snake_case forms, which the real API also accepts.

Reply text and token rule: those of `alumia.sim.openai_format`, each content taken as a message.
    The text is ``"Simulated reply from gemini/{model}:"`` and the words of the last user content
    (role "user" or no role).
    promptTokenCount     = sum over contents of (4 + words of the `text` of its parts; other parts add
                           nothing), plus, when `systemInstruction` is present (not null), one more
                           content counted the same way.
    candidatesTokenCount = reply words returned; `generationConfig.maxOutputTokens` below the reply's
                           length cuts it to that many words with finishReason "MAX_TOKENS", else "STOP".
    totalTokenCount      = promptTokenCount + candidatesTokenCount (+ thoughtsTokenCount, below).

Cache and thinking counts (``[[sim:cached=N;reasoning=M]]``, `alumia.sim.faults`; as
Google documents them). With P and C the prompt and candidates counts of the rule above:
    promptTokenCount        = P: cached tokens are a subset of it, not added to it
    cachedContentTokenCount = N, present only when N > 0
    candidatesTokenCount    = C: thoughts are NOT included
    thoughtsTokenCount      = M, present only when M > 0
    totalTokenCount         = P + C + M
    The reply has no ``thought: true`` part and its text does not change; maxOutputTokens cuts the C
    words only. N above P is a 400 (refused, not clamped); ``cache_write`` is a 400, Gemini's usage
    having no cache-write count. Streamed, every chunk carries the cached and thoughts counts in full
    (the thinking is over before the first text arrives) and the candidates count so far.

Thinking (``generationConfig.thinkingConfig``, recorded under ``received.thinkingConfig``): a
``thinkingBudget`` other than 0 (a positive budget, or -1 for dynamic) makes the model think the text
of `alumia.sim.thinking`, cut to a positive budget. Its T words are thoughts: thoughtsTokenCount =
M + T, and maxOutputTokens bounds them with the reply (the reply's words are cut to maxOutputTokens -
T). With ``includeThoughts`` the answer's parts start with ``{"text": <thinking>, "thought": true}``;
streamed, that part is a chunk of its own before the reply's.

Function calling: with `tools` holding `functionDeclarations` and
``toolConfig.functionCallingConfig.mode`` "ANY", the reply is one ``functionCall`` part calling the
first of `allowedFunctionNames` that is declared (the first declaration when none are given), with
`args` built from its `parameters` or `parametersJsonSchema` (`alumia.sim.tool_args`); finishReason
"STOP"; candidatesTokenCount = words of the args' JSON, never cut by maxOutputTokens. Other modes: text.

Candidates (``generationConfig.candidateCount``, 1 to `MAX_CANDIDATES`, else a 400): one candidate
per count, each with its `index` and its own reply (candidate k >= 1 names itself ``#k+1`` in its
prefix, as the OpenAI format's choices do); maxOutputTokens cuts each on its own; candidatesTokenCount
is the sum over candidates, the prompt (and any cache, thinking or fault reasoning) counted once.
Streamed, the candidates come one after the other, a chunk holding one candidate.

JSON (``responseMimeType: application/json``): the reply's text is `alumia.sim.tool_args.json_answer`
of ``responseJsonSchema`` (else ``responseSchema``; ``{}`` with neither), its words the tokens.

Log probabilities (``responseLogprobs: true``, ``logprobs`` 0 to `MAX_LOGPROBS` only with it): each
text candidate carries ``logprobsResult`` (`logprobs_result`): one chosen candidate per reply word
(the word, spaced as streamed) at `CHOSEN_LOGPROB`, and per step the top ``logprobs`` candidates,
the chosen first, then ``alt1``, ``alt2``... at -1, -2...; streamed, each chunk those of its words.

`/_sim/calls` records `RECEIVED_CONFIG` of generationConfig and the toolConfig under ``received``.

Streaming: ``data: <GenerateContentResponse>\\n\\n`` chunks of `CHUNK_WORDS` reply words each (the
first chunk's text bare, later ones with a leading space, so the texts concatenate to the
non-streaming text), every one with `usageMetadata` (the prompt count and the candidates count so far),
the last one with the finishReason; then the connection closes, with no ``[DONE]``. A function call
streams as one chunk.

Faults (`alumia.sim.faults`): read from and removed from the last user content; a status fault answers
with Google's RPC error (RetryInfo "2s" on 429); `no_usage` drops `usageMetadata` everywhere;
`partial_usage` (not streaming) leaves only promptTokenCount and totalTokenCount in it. `hold`
waits for ``POST /_sim/release`` after the checks and the delay. `overrun=N` adds the words ``more1 ...
moreN`` and ignores maxOutputTokens: finishReason "STOP", candidatesTokenCount = every word sent.
`stream_error_after=N` (streaming only) sends the first N chunks, none with a finishReason (each with
its usageMetadata as usual), then Google's 503 UNAVAILABLE error as a raw, pretty-printed JSON object
(`alumia.sim.errors.GEMINI_STREAM_ERROR`): with ``alt=sse`` without a ``data:`` prefix, followed by
``\\n``; in the JSON-array form as the array's last element. Nothing comes after it.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alumia.sim.anthropic_format import display_name
from alumia.sim.calls import CallLog
from alumia.sim.errors import GEMINI_STREAM_ERROR, ErrorReply, error_response, fault_reply, google_error
from alumia.sim.faults import (
    NO_FAULTS,
    FaultError,
    Faults,
    check_cache_bounds,
    may_have_faults,
    stream_response,
    wait_out,
)
from alumia.sim.held import HeldCalls
from alumia.sim.openai_format import Reply, key_problem, make_reply, prompt_tokens, take_faults
from alumia.sim.thinking import thinking_words
from alumia.sim.tool_args import ToolCall, forced_call, json_answer

WIRE_FORMAT = "gemini"
CHUNK_WORDS = 3
GENERATE = "generateContent"
STREAM_GENERATE = "streamGenerateContent"
SUPPORTED_METHODS = (GENERATE,)
# OpenAI-style finish reasons of `Reply` -> Gemini finish reasons.
FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
# Gemini's bounds on candidateCount and on logprobs (top candidates per step).
MAX_CANDIDATES = 8
MAX_LOGPROBS = 20
CHOSEN_LOGPROB = -0.25
# The generationConfig fields `/_sim/calls` records under `received`.
RECEIVED_CONFIG = ("maxOutputTokens", "candidateCount", "thinkingConfig", "responseMimeType",
                   "responseJsonSchema", "responseSchema", "stopSequences", "seed", "responseLogprobs",
                   "logprobs", "temperature")

_JSON = "application/json"


def _get(obj: object, name: str) -> Any:
    """Field `name` (lowerCamelCase) of a JSON object, also under its snake_case name."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    return obj.get("".join("_" + c.lower() if c.isupper() else c for c in name))


def text_of_content(content: object) -> str:
    """The text of a Content: the `text` of its parts joined by spaces; other parts add nothing."""
    parts = _get(content, "parts")
    if not isinstance(parts, list):
        return ""
    return " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def models_body(model_ids: Sequence[str]) -> bytes:
    """Gemini's `GET /models` list."""
    return orjson.dumps({"models": [
        {"name": f"models/{model_id}", "displayName": display_name(model_id),
         "supportedGenerationMethods": list(SUPPORTED_METHODS)}
        for model_id in model_ids
    ]})


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """The parts of a generateContent request the simulator acts on.

    `messages` are the contents as OpenAI-style ``{"role", "content": text}`` messages, so the token
    rule of `alumia.sim.openai_format` applies to them unchanged.
    """

    model: str
    messages: list[dict[str, Any]]
    system: str | None
    limit: int | None
    tool_call: ToolCall | None = None
    thinking_budget: int | None = None  # thinkingConfig.thinkingBudget when it asks for thinking
    include_thoughts: bool = False
    candidates: int = 1  # generationConfig.candidateCount
    json_text: str | None = None  # the answer to responseMimeType application/json
    logprobs: int | None = None  # responseLogprobs: how many top candidates per step (0: the chosen only)

    def counted_messages(self) -> list[dict[str, Any]]:
        """The messages the token rule counts: the system instruction, when present, first."""
        if self.system is None:
            return self.messages
        return [{"role": "system", "content": self.system}, *self.messages]


def _invalid(message: str) -> ErrorReply:
    return google_error(400, message)


def _forced_tool_call(body: dict[str, Any]) -> ToolCall | ErrorReply | None:
    """The call mode "ANY" asks for; None for any other mode."""
    config = _get(_get(body, "toolConfig"), "functionCallingConfig")
    mode = _get(config, "mode")
    if not isinstance(mode, str) or mode.upper() != "ANY":
        return None
    tools = _get(body, "tools")
    declarations = [d for tool in tools if isinstance(tool, dict)
                    for d in (_get(tool, "functionDeclarations") or []) if isinstance(d, dict)
                    and isinstance(d.get("name"), str)] if isinstance(tools, list) else []
    if not declarations:
        return _invalid("* GenerateContentRequest.tool_config.function_calling_config.mode: mode ANY "
                        "requires function declarations\n")
    allowed = _get(config, "allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        declared = {d["name"]: d for d in declarations}
        name = next((n for n in allowed if isinstance(n, str) and n in declared), None)
        if name is None:
            return _invalid("* GenerateContentRequest.tool_config.function_calling_config."
                            "allowed_function_names: no allowed function is declared\n")
        declaration = declared[name]
    else:
        declaration = declarations[0]
    schema = _get(declaration, "parametersJsonSchema")
    if schema is None:
        schema = declaration.get("parameters")
    return forced_call(declaration["name"], schema)


def parse_generate_request(model: str, body: object) -> GenerateRequest | ErrorReply:
    """Check a decoded request body the way Gemini does for the fields we use; an ErrorReply when bad."""
    if not isinstance(body, dict):
        return _invalid("Invalid JSON payload received.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return _invalid("* GenerateContentRequest.contents: contents is not specified\n")
    messages: list[dict[str, Any]] = []
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            return _invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be "
                            "empty.\n")
        role = content.get("role") or "user"
        messages.append({"role": role, "content": text_of_content(content)})
    instruction = _get(body, "systemInstruction")
    if instruction is not None and not isinstance(instruction, dict):
        return _invalid("Invalid value at 'system_instruction': expected a Content object.")
    limit = _get(_get(body, "generationConfig"), "maxOutputTokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        return _invalid("* GenerateContentRequest.generation_config.max_output_tokens: must be a positive "
                        "integer\n")
    tool_call = _forced_tool_call(body)
    if isinstance(tool_call, ErrorReply):
        return tool_call
    config = _get(body, "generationConfig")
    count = _get(config, "candidateCount")
    count = 1 if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CANDIDATES:
        return _invalid(f"* GenerateContentRequest.generation_config.candidate_count: must be from 1 to "
                        f"{MAX_CANDIDATES}\n")
    top = _get(config, "logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int)
                            or not 0 <= top <= MAX_LOGPROBS):
        return _invalid(f"* GenerateContentRequest.generation_config.logprobs: must be from 0 to "
                        f"{MAX_LOGPROBS}\n")
    if top is not None and _get(config, "responseLogprobs") is not True:
        return _invalid("* GenerateContentRequest.generation_config.logprobs: only valid if "
                        "response_logprobs is true\n")
    schema = _get(config, "responseJsonSchema")
    schema = _get(config, "responseSchema") if schema is None else schema
    json_text = json_answer(schema) if _get(config, "responseMimeType") == "application/json" else None
    thinking = _get(_get(body, "generationConfig"), "thinkingConfig")
    budget = _get(thinking, "thinkingBudget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < -1):
        return _invalid("* GenerateContentRequest.generation_config.thinking_config.thinking_budget: must "
                        "be -1, 0 or a positive integer\n")
    return GenerateRequest(model=model, messages=messages,
                           system=text_of_content(instruction) if instruction is not None else None,
                           limit=limit, tool_call=tool_call,
                           thinking_budget=budget if isinstance(thinking, dict) and budget != 0 else None,
                           include_thoughts=_get(thinking, "includeThoughts") is True, candidates=count,
                           json_text=json_text,
                           logprobs=(top or 0) if _get(config, "responseLogprobs") is True else None)


def _usage(replies: Sequence[Reply], candidates: int) -> dict[str, int]:
    """`usageMetadata` with `candidates` output tokens so far, over every candidate (the module's cache
    and thinking counts: the prompt and the cache once, thoughts summed)."""
    first = replies[0]
    reasoning = sum(reply.reasoning for reply in replies)
    usage = {"promptTokenCount": first.prompt_tokens, "candidatesTokenCount": candidates,
             "totalTokenCount": first.prompt_tokens + candidates + reasoning}
    if first.cached:
        usage["cachedContentTokenCount"] = first.cached
    if reasoning:
        usage["thoughtsTokenCount"] = reasoning
    return usage


def logprobs_result(words: Sequence[str], first: bool, top: int) -> dict[str, Any]:
    """A candidate's `logprobsResult` for the words it sends (the module's rule): each word is chosen
    with CHOSEN_LOGPROB, and the top `top` candidates of a step are it, then ``alt1``... at -1, -2..."""
    tokens = [word if first and i == 0 else " " + word for i, word in enumerate(words)]
    chosen = [{"token": token, "logProbability": CHOSEN_LOGPROB} for token in tokens]
    tops = [{"candidates": ([entry] + [{"token": f"alt{k}", "logProbability": float(-k)}
                                       for k in range(1, top)])[:top]} for entry in chosen]
    return {"topCandidates": tops, "chosenCandidates": chosen,
            "logProbabilitySum": CHOSEN_LOGPROB * len(chosen)}


def _candidate(parts: list[dict[str, Any]], finish: str | None, index: int,
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = index
    if logprobs is not None:
        candidate["logprobsResult"] = logprobs
    return candidate


def _response(req: GenerateRequest, response_id: str, candidates: list[dict[str, Any]],
              usage: dict[str, int] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"candidates": candidates}
    if usage is not None:
        out["usageMetadata"] = usage
    out["modelVersion"] = req.model
    out["responseId"] = response_id
    return out


def _call_part(call: ToolCall) -> dict[str, Any]:
    return {"functionCall": {"name": call.name, "args": call.arguments}}


def _thought_parts(thought: str | None) -> list[dict[str, Any]]:
    return [{"text": thought, "thought": True}] if thought else []


def response_body(req: GenerateRequest, replies: Sequence[Reply], response_id: str, *, usage: bool = True,
                  partial_usage: bool = False, thought: str | None = None) -> bytes:
    """The non-streaming GenerateContentResponse, one candidate per reply; `partial_usage` leaves
    candidatesTokenCount out; `thought` (includeThoughts) is a thought part before the first reply's."""
    candidates = []
    for index, reply in enumerate(replies):
        part = _call_part(reply.tool_call) if reply.tool_call is not None else {"text": reply.content}
        logprobs = (logprobs_result(reply.words, True, req.logprobs)
                    if req.logprobs is not None and reply.tool_call is None else None)
        candidates.append(_candidate([*_thought_parts(thought if index == 0 else None), part],
                                     FINISH_REASONS[reply.finish_reason], index, logprobs))
    total = sum(r.completion_tokens for r in replies)
    meta: dict[str, int] | None = _usage(replies, total) if usage else None
    if meta is not None and partial_usage:
        meta = {"promptTokenCount": meta["promptTokenCount"], "totalTokenCount": meta["totalTokenCount"]}
    return orjson.dumps(_response(req, response_id, candidates, meta))


def stream_chunks(req: GenerateRequest, replies: Sequence[Reply], response_id: str, *, usage: bool = True,
                  finish_reason: bool = True, thought: str | None = None) -> list[bytes]:
    """The encoded GenerateContentResponse chunks of the streamed reply, in order.

    Candidates stream one after the other, each chunk holding one (with its `index`) and the usage of
    every candidate so far. `finish_reason` False leaves the finishReason off the last chunk of each
    (a stream that fails instead); `thought` (includeThoughts) is a chunk of its own first.
    """
    chunks: list[bytes] = []
    if thought:
        chunks.append(orjson.dumps(_response(req, response_id, [_candidate(_thought_parts(thought), None, 0)],
                                             _usage(replies, 0) if usage else None)))
    sent = 0
    for index, reply in enumerate(replies):
        finish = FINISH_REASONS[reply.finish_reason] if finish_reason else None
        if reply.tool_call is not None:
            sent += reply.completion_tokens
            chunks.append(orjson.dumps(_response(
                req, response_id, [_candidate([_call_part(reply.tool_call)], finish, index)],
                _usage(replies, sent) if usage else None)))
            continue
        words = reply.words
        for start in range(0, len(words), CHUNK_WORDS):
            end = min(start + CHUNK_WORDS, len(words))
            sent += end - start
            text = " ".join(words[start:end])
            logprobs = (logprobs_result(words[start:end], start == 0, req.logprobs)
                        if req.logprobs is not None else None)
            chunks.append(orjson.dumps(_response(
                req, response_id,
                [_candidate([{"text": text if start == 0 else " " + text}],
                            finish if end == len(words) else None, index, logprobs)],
                _usage(replies, sent) if usage else None)))
    return chunks


def stream_error() -> bytes:
    """Gemini's mid-stream error: a raw JSON object over several lines, as Google sends errors."""
    return orjson.dumps(dict(GEMINI_STREAM_ERROR), option=orjson.OPT_INDENT_2)


def sse_frames(chunks: Sequence[bytes]) -> list[bytes]:
    """The chunks as ``alt=sse`` frames."""
    return [b"data: " + chunk + b"\n\n" for chunk in chunks]


def array_frames(chunks: Sequence[bytes]) -> list[bytes]:
    """The chunks as one streamed JSON array, as Gemini answers without ``alt=sse``."""
    frames = [(b"[" if i == 0 else b",\r\n") + chunk for i, chunk in enumerate(chunks)]
    frames[-1] += b"]"
    return frames


def _received(body: object) -> dict[str, Any]:
    """What `/_sim/calls` records of a body: RECEIVED_CONFIG of its generationConfig, and its toolConfig."""
    config = _get(body, "generationConfig")
    out = {name: _get(config, name) for name in RECEIVED_CONFIG if _get(config, name) is not None}
    if (tool_config := _get(body, "toolConfig")) is not None:
        out["toolConfig"] = tool_config
    return out


def key_of(request: Request) -> str | None:
    """The key a request carries: the `x-goog-api-key` header, else the `key` query parameter."""
    return request.headers.get("x-goog-api-key") or request.query_params.get("key") or None


def routes(provider: str, prefix: str, model_ids: Sequence[str], log: CallLog,
           held: HeldCalls) -> list[Route]:
    """The generateContent and models routes of one Gemini-format provider under its path prefix.

    `held` is the simulator's one registry of calls held by ``[[sim:hold]]``.
    """
    models_payload = models_body(model_ids)
    models_path = f"{prefix}/models"

    async def generate(request: Request) -> Response:
        raw = await request.body()
        key = key_of(request)
        model, _, method = request.path_params["target"].rpartition(":")
        stream = method == STREAM_GENERATE
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        log.record(provider=provider, model=model or None, key=key, stream=stream, path=request.url.path,
                   received=_received(body))
        if (problem := key_problem(provider, WIRE_FORMAT, key, log)) is not None:
            return error_response(problem)
        if not model or method not in (GENERATE, STREAM_GENERATE):
            return error_response(google_error(404, f"Method {method or request.path_params['target']!r} "
                                                    "is not found for this model.", rpc_status="NOT_FOUND"))
        req = parse_generate_request(model, body)
        if isinstance(req, ErrorReply):
            return error_response(req)
        faults: Faults = NO_FAULTS
        if may_have_faults(raw):
            try:
                faults, cleaned = take_faults(req.messages)
                req = replace(req, messages=cleaned)
                if faults.cached or faults.cache_write:
                    check_cache_bounds(faults, prompt_tokens(req.counted_messages()), provider=provider,
                                       cache_writes=False)
            except FaultError as exc:
                return error_response(_invalid(f"* GenerateContentRequest.contents: {exc}\n"))
            await wait_out(faults, held, f"{provider}/{req.model}")
            if faults.status is not None:
                return error_response(fault_reply(WIRE_FORMAT, faults.status))
        thought = (thinking_words(provider, req.model, req.messages, req.thinking_budget)
                   if req.thinking_budget is not None else [])
        if req.limit is not None:
            thought = thought[:req.limit]  # dynamic thinking still stops at maxOutputTokens
        limit = req.limit - len(thought) if req.limit is not None else None
        replies = [make_reply(provider, req.model, req.counted_messages(), limit, req.tool_call, faults,
                              choice, req.json_text) for choice in range(req.candidates)]
        # The thinking and the fault's reasoning count once, on the first candidate.
        replies = [replace(replies[0], reasoning=replies[0].reasoning + len(thought)),
                   *(replace(reply, reasoning=0) for reply in replies[1:])]
        shown = " ".join(thought) if req.include_thoughts and thought else None
        response_id = os.urandom(12).hex()
        usage = not faults.no_usage
        if stream:
            error_after = faults.stream_error_after
            sse = request.query_params.get("alt") == "sse"
            if error_after is not None:
                chunks = stream_chunks(req, replies, response_id, usage=usage, finish_reason=False,
                                       thought=shown)[:error_after]
                if sse:
                    # Raw, not a `data:` event: that is how Gemini's mid-stream errors arrive.
                    return stream_response([*sse_frames(chunks), stream_error() + b"\n"], faults)
                return stream_response(array_frames([*chunks, stream_error()]), faults, media_type=_JSON)
            chunks = stream_chunks(req, replies, response_id, usage=usage, thought=shown)
            if sse:
                return stream_response(sse_frames(chunks), faults)
            return stream_response(array_frames(chunks), faults, media_type=_JSON)
        return Response(response_body(req, replies, response_id, usage=usage,
                                      partial_usage=faults.partial_usage, thought=shown), media_type=_JSON)

    async def models(request: Request) -> Response:
        key = key_of(request)
        log.record(provider=provider, model=None, key=key, stream=False, path=models_path)
        if (problem := key_problem(provider, WIRE_FORMAT, key, log)) is not None:
            return error_response(problem)
        return Response(models_payload, media_type=_JSON)

    return [Route(f"{models_path}/{{target}}", generate, methods=["POST"]),
            Route(models_path, models, methods=["GET"])]
