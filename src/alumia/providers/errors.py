"""Reading a message out of every provider's error body (as each provider documents them)."""

import orjson

_MAX_MESSAGE = 500


def _first(obj: object) -> object:
    # Gemini sometimes wraps its error body in a one-element array.
    return obj[0] if isinstance(obj, list) and obj else obj


def error_message(body: bytes) -> tuple[str, str | None]:
    """The human message and the provider's code, from any of the known shapes.

    Shapes: {"error":{"message","code"|"type"}}, {"error":"text"} (xAI), flat {"message","code"}
    (Cerebras), {"detail": ...} (Mistral, NVIDIA), {"base_resp":{"status_msg","status_code"}}
    (MiniMax), and Gemini's [{"error":{...}}]. Unknown bodies give a generic message, never the body.
    """
    try:
        data = _first(orjson.loads(body))
    except orjson.JSONDecodeError:
        return "the provider returned an error without a readable body", None
    if not isinstance(data, dict):
        return "the provider returned an error without a readable body", None
    message: object = None
    code: object = None
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code") or error.get("type") or error.get("status")
    elif isinstance(error, str):
        message, code = error, data.get("code")
    if message is None and isinstance(data.get("base_resp"), dict):
        message = data["base_resp"].get("status_msg")
        code = data["base_resp"].get("status_code")
    if message is None:
        message = data.get("message") or data.get("detail") or data.get("title")
        code = code or data.get("code") or data.get("type")
    if not isinstance(message, str) or not message:
        return "the provider returned an error", None if code is None else str(code)
    return message[:_MAX_MESSAGE], None if code is None else str(code)
