"""The OpenAI chat-completions wire format, as the simulator speaks it for the 12 providers that use it.

Replies are deterministic: the same request always gets the same text and token counts, so tests can
assert exact usage and money without a model.

Reply text
    ``"Simulated reply from {provider}/{model}:"`` followed by the words of the last user message,
    at most `MAX_ECHO_WORDS` of them. Words are whitespace-separated; they are joined with single
    spaces (see `reply_words`).

Token rule (what `usage` reports)
    prompt_tokens     = sum over messages of (4 + number of whitespace-separated words in the
                        message's text), where the text is the string content, or the `text` of every
                        ``{"type": "text"}`` part when the content is a list; other parts, `null`
                        content and tool calls add nothing beyond the 4 (see `prompt_tokens`).
    completion_tokens = number of reply words actually returned. When the request sets
                        `max_completion_tokens` (or else the legacy `max_tokens`) below the full reply's
                        length, the reply is cut to that many words and finish_reason is "length";
                        otherwise finish_reason is "stop".
    total_tokens      = prompt_tokens + completion_tokens; cached and reasoning tokens are always 0.

Streaming sends a role chunk, one chunk per reply word (the first word bare, each later one with its
leading space, so the fragments concatenate to exactly the non-streaming content), a finish chunk and,
with ``stream_options.include_usage``, a usage chunk with empty `choices`; then ``data: [DONE]``.
"""

import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from alumia.sim.calls import CallLog
from alumia.sim.errors import ErrorReply, bad_key_reply, openai_error

REPLY_PREFIX = "Simulated reply from"
MAX_ECHO_WORDS = 64
PER_MESSAGE_TOKENS = 4
SYSTEM_FINGERPRINT = "fp_alumia_sim"
# A fixed creation time for listed models keeps /models byte-for-byte stable.
MODELS_CREATED = 1767225600
# Providers that also take the key in an `api-key` header (shared/providers.md §1).
API_KEY_HEADER_PROVIDERS = frozenset({"xiaomi"})

_JSON = "application/json"
_DONE = b"data: [DONE]\n\n"


def text_of(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Prompt tokens by the module's rule: 4 per message plus the words of its text."""
    return sum(PER_MESSAGE_TOKENS + len(text_of(m.get("content")).split()) for m in messages)


def reply_words(provider: str, model: str, messages: Sequence[dict[str, Any]]) -> list[str]:
    """The full (uncut) reply, as words: the prefix naming provider and model, then the echoed prompt."""
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    echoed = text_of(last_user.get("content")).split()[:MAX_ECHO_WORDS] if last_user else []
    # Splitting the prefix too keeps "words" and "what .split() finds in the content" the same thing
    # even for a model id with spaces in it.
    return f"{REPLY_PREFIX} {provider}/{model}:".split() + echoed


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply as returned: its words (already cut to the limit), finish reason and prompt tokens."""

    words: list[str]
    finish_reason: str
    prompt_tokens: int

    @property
    def content(self) -> str:
        """The reply text, as the non-streaming response carries it."""
        return " ".join(self.words)

    def usage(self) -> dict[str, Any]:
        """The `usage` object, by the module's token rule."""
        completion = len(self.words)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }


def make_reply(provider: str, model: str, messages: Sequence[dict[str, Any]], limit: int | None) -> Reply:
    """The reply to a request, cut to `limit` words when it is longer ("length"), else whole ("stop")."""
    words = reply_words(provider, model, messages)
    finish = "stop"
    if limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    return Reply(words=words, finish_reason=finish, prompt_tokens=prompt_tokens(messages))


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat-completions request the simulator acts on."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    limit: int | None


def parse_chat_request(body: object) -> ChatRequest | ErrorReply:
    """Check a decoded request body the way OpenAI does for the fields we use; an ErrorReply when bad."""
    if not isinstance(body, dict):
        return openai_error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return openai_error(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return openai_error(400, "Missing required parameter: 'messages'.", param="messages",
                            code="missing_required_parameter")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return openai_error(400, f"Invalid value for 'messages[{i}]': expected an object with a 'role'.",
                                param=f"messages[{i}]", code="invalid_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return openai_error(400, "Invalid type for 'stream': expected a boolean.", param="stream",
                            code="invalid_type")
    options = body.get("stream_options")
    if options is not None and not stream:
        return openai_error(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                            param="stream_options", code="invalid_value")
    if options is not None and not isinstance(options, dict):
        return openai_error(400, "Invalid type for 'stream_options': expected an object.",
                            param="stream_options", code="invalid_type")
    # max_completion_tokens supersedes the legacy max_tokens when both are sent.
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    limit = body.get(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        return openai_error(400, f"Invalid '{name}': expected an integer >= 1, but got {limit!r} instead.",
                            param=name, code="integer_below_min_value")
    return ChatRequest(model=model, messages=messages, stream=bool(stream),
                       include_usage=bool(options and options.get("include_usage") is True), limit=limit)


def completion_body(req: ChatRequest, reply: Reply, completion_id: str, created: int) -> bytes:
    """The non-streaming `chat.completion` body."""
    return orjson.dumps({
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.content, "refusal": None},
            "finish_reason": reply.finish_reason,
            "logprobs": None,
        }],
        "usage": reply.usage(),
    })


def stream_frames(req: ChatRequest, reply: Reply, completion_id: str, created: int) -> list[bytes]:
    """Every SSE frame of the streamed reply, `[DONE]` included, in order."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": req.model,
            "system_fingerprint": SYSTEM_FINGERPRINT}
    # OpenAI puts `usage: null` on every chunk only when usage was asked for.
    tail: dict[str, Any] = {"usage": None} if req.include_usage else {}

    def frame(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return b"data: " + orjson.dumps({**head, "choices": [choice], **tail}) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""}, None)]
    frames.extend(frame({"content": word if i == 0 else " " + word}, None)
                  for i, word in enumerate(reply.words))
    frames.append(frame({}, reply.finish_reason))
    if req.include_usage:
        frames.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": reply.usage()}) + b"\n\n")
    frames.append(_DONE)
    return frames


def models_body(provider: str, model_ids: Sequence[str]) -> bytes:
    """The `GET /models` list for one provider."""
    return orjson.dumps({"object": "list", "data": [
        {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": provider}
        for model_id in model_ids
    ]})


def key_of(request: Request, provider: str) -> str | None:
    """The key a request carries the way `provider` accepts it, or None when it carries none."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            return token
    if provider in API_KEY_HEADER_PROVIDERS:
        return request.headers.get("api-key") or None
    return None


def _reply(error: ErrorReply) -> Response:
    return Response(error.body, status_code=error.status, media_type=error.media_type)


def _rejects(key: str | None) -> bool:
    # The simulator's whole notion of a bad key: none at all, or one that says so.
    return key is None or "invalid" in key


async def _sse(frames: list[bytes]) -> AsyncIterator[bytes]:
    # An async generator, not a list, so each frame goes out as its own chunk, as a real stream does
    # (and Starlette does not hand a sync iterator to a thread pool).
    for chunk in frames:
        yield chunk


def routes(provider: str, prefix: str, model_ids: Sequence[str], log: CallLog) -> list[Route]:
    """The chat-completions and models routes of one provider under its path prefix."""
    models_payload = models_body(provider, model_ids)
    chat_path = f"{prefix}/chat/completions"
    models_path = f"{prefix}/models"

    async def chat(request: Request) -> Response:
        raw = await request.body()
        key = key_of(request, provider)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        fields = body if isinstance(body, dict) else {}
        model = fields.get("model")
        log.record(provider=provider, model=model if isinstance(model, str) else None, key=key,
                   stream=fields.get("stream") is True, path=chat_path)
        # Authentication comes before validation, as on the real APIs.
        if _rejects(key):
            return _reply(bad_key_reply(provider, key))
        req = parse_chat_request(body)
        if isinstance(req, ErrorReply):
            return _reply(req)
        reply = make_reply(provider, req.model, req.messages, req.limit)
        completion_id = "chatcmpl-" + os.urandom(12).hex()
        created = int(time.time())
        if req.stream:
            return StreamingResponse(_sse(stream_frames(req, reply, completion_id, created)),
                                     media_type="text/event-stream", headers={"cache-control": "no-cache"})
        return Response(completion_body(req, reply, completion_id, created), media_type=_JSON)

    async def models(request: Request) -> Response:
        key = key_of(request, provider)
        log.record(provider=provider, model=None, key=key, stream=False, path=models_path)
        if _rejects(key):
            return _reply(bad_key_reply(provider, key))
        return Response(models_payload, media_type=_JSON)

    return [Route(chat_path, chat, methods=["POST"]), Route(models_path, models, methods=["GET"])]
