"""Checking a client's OpenAI embeddings request once, before anything is priced or sent.

The shape is OpenAI's `CreateEmbeddingRequest`: `model`, `input` (a string, an array of strings, an
array of token ids, or an array of token-id arrays), `dimensions`, `encoding_format` ("float" or
"base64") and `user`. The schema allows no other field, and neither does the gateway: an unknown
field is a 422 naming it, never dropped (the caller would otherwise think it had an effect). Null is
taken as absent for the optional fields. Messages name the field and never echo a value.

Two passes: `parse_embedding_request` checks what needs no catalog (types, bounds, the number of
inputs against the gateway's cap); `check_for_model` then checks what the model decides (its kind,
its own cap on inputs, whether it takes `dimensions` or token ids).
"""

from dataclasses import dataclass
from typing import Any, Literal

from alumia.domain.catalog import Model
from alumia.errors import AppError, ErrorCode
from alumia.json_body import json_object
from alumia.services.chat_request import RequestLimits

FIELDS = ("model", "input", "dimensions", "encoding_format", "user")
ENCODINGS = ("float", "base64")
MAX_INPUTS = 2048  # OpenAI's own cap on the inputs of one request; a model may allow fewer
MAX_TOKEN_ID = 2**31 - 1  # token ids are vocabulary indices; anything larger is not one

EncodingFormat = Literal["float", "base64"]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A checked embeddings request: the body as sent (its model maybe an alias) and its parts.

    `inputs` is always a list: of texts, or of token-id arrays (a flat token array is one input).
    The class attributes below are what the shared call path (services/call.py, proxy.py `send`) asks
    of any request: an embedding is never streamed, has no output limit, and is one answer.
    """

    stream = False
    max_output_tokens = None
    choices = 1

    body: dict[str, Any]
    model: str
    inputs: list[str] | list[list[int]]
    dimensions: int | None
    encoding_format: EncodingFormat
    user: str | None

    @property
    def tokens_given(self) -> bool:
        """Whether the inputs are token ids rather than texts."""
        return bool(self.inputs) and not isinstance(self.inputs[0], str)


def _bad(path: str, what: str) -> AppError:
    return AppError(ErrorCode.VALIDATION_ERROR, f"{path}: {what}")


_INPUT_SHAPES = ("must be a non-empty string, or a non-empty array of non-empty strings, of token ids, "
                 "or of non-empty arrays of token ids")


_TOKEN_ID = f"must be a token id (an integer from 0 to {MAX_TOKEN_ID})"


def _is_token(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKEN_ID  # bool is not an int here


def _inputs(value: Any) -> list[str] | list[list[int]]:
    """The inputs as a list, each checked; the first wrong one is named by its index."""
    if type(value) is str:
        if not value:
            raise _bad("input", "must not be an empty string")
        return [value]
    if type(value) is not list or not value:
        raise _bad("input", _INPUT_SHAPES)
    if len(value) > MAX_INPUTS:
        raise _bad("input", f"holds {len(value)} inputs; at most {MAX_INPUTS} are allowed per request")
    first = value[0]
    if type(first) is str:
        for i, item in enumerate(value):
            if type(item) is not str or not item:
                raise _bad(f"input[{i}]", "must be a non-empty string, like the other inputs")
        return value
    if type(first) is int:
        for i, item in enumerate(value):
            if not _is_token(item):
                raise _bad(f"input[{i}]", _TOKEN_ID)
        return [value]
    if type(first) is list:
        for i, item in enumerate(value):
            if type(item) is not list or not item:
                raise _bad(f"input[{i}]", "must be a non-empty array of token ids, like the other inputs")
            for j, token in enumerate(item):
                if not _is_token(token):
                    raise _bad(f"input[{i}][{j}]", _TOKEN_ID)
        return value
    raise _bad("input", _INPUT_SHAPES)


def parse_embedding_request(raw: bytes, limits: RequestLimits = RequestLimits()) -> EmbeddingRequest:
    """Parse and check the client's body; VALIDATION_ERROR naming the field, never echoing it."""
    if len(raw) > limits.max_body_bytes:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body is over {limits.max_body_bytes} bytes")
    body = json_object(raw)
    unknown = [name for name in body if name not in FIELDS]
    if unknown:
        raise _bad(unknown[0], f"is not a field of an embeddings request; the fields are {', '.join(FIELDS)}")
    model = body.get("model")
    if type(model) is not str or not model:
        raise _bad("model", "is required and must be a non-empty string")
    if "input" not in body:
        raise _bad("input", "is required")
    inputs = _inputs(body["input"])
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise _bad("dimensions", "must be a positive integer")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise _bad("encoding_format", "must be \"float\" or \"base64\"")
    user = body.get("user")
    if user is not None and type(user) is not str:
        raise _bad("user", "must be a string")
    return EmbeddingRequest(body=body, model=model, inputs=inputs, dimensions=dimensions,
                            encoding_format=encoding or "float", user=user)


def check_for_model(request: EmbeddingRequest, model: Model) -> None:
    """What the model decides: that it embeds at all, and what it accepts (catalog `Embedding`)."""
    spec = model.embedding
    if spec is None:
        raise AppError(ErrorCode.BAD_REQUEST,
                       f"{model.id} is a chat model, not an embedding model: call it on "
                       "/v1/chat/completions; GET /v1/models lists each model's kind")
    if len(request.inputs) > spec.max_inputs:
        raise _bad("input", f"holds {len(request.inputs)} inputs; {model.id} takes at most "
                   f"{spec.max_inputs} per request")
    if request.tokens_given and not spec.token_input:
        raise _bad("input", f"{model.id} takes text only; token ids are for models whose provider "
                   "tokenises as the client did (OpenAI's)")
    if request.dimensions is not None:
        if not spec.flexible_dimensions:
            raise _bad("dimensions", f"{model.id} does not take dimensions; its vectors have "
                       f"{spec.dimensions}")
        if request.dimensions > spec.max_dimensions:
            raise _bad("dimensions", f"{model.id} makes vectors of at most {spec.max_dimensions} dimensions")
