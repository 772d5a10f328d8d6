"""Arguments for a forced tool call, built deterministically from the tool's JSON schema.

When a request forces a tool call (OpenAI ``tool_choice`` "required" or a named function, Anthropic
``{"type": "any"}`` or ``{"type": "tool"}``, Gemini mode ``ANY``), the simulator calls the tool with
arguments made from its parameter schema, so a client that validates them against the schema accepts
them. The rule, applied recursively:

- ``const`` gives its value; ``enum`` gives its first value;
- ``$ref`` to ``#/$defs/...`` or ``#/definitions/...`` is followed; ``anyOf`` / ``oneOf`` take their
  first non-null branch; ``allOf`` merges the object branches (else takes the first);
- by ``type`` (a list of types takes its first non-null one; Gemini's upper-case names work too):
  string ``"sim"``, integer ``1``, number ``1.5``, boolean ``true``, null ``null``, array ``[one item]``
  built from ``items`` (``"sim"`` when there are none), object: each ``required`` property, or every
  property when none is required, built from its own schema;
- without a ``type``: an object when the schema has ``properties``, an array when it has ``items``,
  else ``"sim"``.

Bounds are honoured where that is cheap: ``minimum`` / ``maximum`` (and the exclusive forms) move the
number into range, ``minLength`` / ``maxLength`` pad or cut the string, ``minItems`` repeats the item.
``pattern``, ``format`` and ``additionalProperties`` are not looked at.

The top level is always an object: a schema that would give anything else gives ``{}``.

A JSON answer (OpenAI ``response_format``, Anthropic ``output_config.format``, Gemini
``responseMimeType: application/json``) is `json_answer`: the same value made from the schema, at any
top level (``{}`` with no schema, as for json_object), as JSON with the same separators.

Completion tokens of a tool call (all three formats): the number of whitespace-separated words in
`arguments_json` of the arguments, JSON with Python's default separators (``", "`` and ``": "``), e.g.
``{"city": "sim", "days": 1}`` is 4 tokens and ``{}`` is 1.
"""

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 16


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                defs = root.get(prefix[2:-1])
                target = defs.get(ref[len(prefix):]) if isinstance(defs, dict) else None
                if isinstance(target, dict):
                    return target
    return schema


def _type_of(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), None)
    if isinstance(kind, str):
        return kind.lower()
    if isinstance(schema.get("properties"), dict):
        return "object"
    if "items" in schema:
        return "array"
    return None


def _number(schema: dict[str, Any], value: float, integer: bool) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if integer else 0.5
    if isinstance(low, int | float) and not isinstance(low, bool) and value < low:
        value = low
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool) and value <= ex_low:
        value = ex_low + step
    if isinstance(high, int | float) and not isinstance(high, bool) and value > high:
        value = high
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool) and value >= ex_high:
        value = ex_high - step
    return math.ceil(value) if integer else value


def _string(schema: dict[str, Any]) -> str:
    text = "sim"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = (text * (low // len(text) + 1))[:low]
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def value_for(schema: object, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value that fits `schema`, by the module's rule."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return "sim"
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            usable = [b for b in branches if not (isinstance(b, dict) and _type_of(b) == "null")]
            return value_for((usable or branches)[0], root, depth + 1)
    branches = schema.get("allOf")
    if isinstance(branches, list) and branches:
        parts = [value_for(b, root, depth + 1) for b in branches]
        if all(isinstance(p, dict) for p in parts):
            return {k: v for part in parts for k, v in part.items()}
        return parts[0]
    kind = _type_of(schema)
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        listed = schema.get("required")
        required = [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []
        names = required or list(properties)
        return {name: value_for(properties.get(name, {}), root, depth + 1) for name in names}
    if kind == "array":
        item = value_for(schema["items"], root, depth + 1) if "items" in schema else "sim"
        count = schema.get("minItems")
        return [item] * (count if isinstance(count, int) and count > 1 else 1)
    if kind == "integer":
        return _number(schema, 1, integer=True)
    if kind == "number":
        return _number(schema, 1.5, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def build_arguments(schema: object) -> dict[str, Any]:
    """The arguments of a forced call of a tool whose parameters are `schema`; always an object."""
    value = value_for(schema)
    return value if isinstance(value, dict) else {}


def arguments_json(arguments: dict[str, Any]) -> str:
    """The arguments as the JSON string OpenAI's `function.arguments` carries (and tokens are counted on)."""
    return json.dumps(arguments, ensure_ascii=False)


def json_answer(schema: object | None) -> str:
    """The JSON text a request for JSON is answered with: a value fitting `schema`, else ``{}``."""
    return json.dumps(value_for(schema) if isinstance(schema, dict) else {}, ensure_ascii=False)


def tool_tokens(arguments: dict[str, Any]) -> int:
    """Completion tokens of a call with these arguments: the words of their JSON."""
    return len(arguments_json(arguments).split())


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A forced call of one tool: its name and the arguments built from its schema."""

    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        """The arguments as a JSON string (see `arguments_json`)."""
        return arguments_json(self.arguments)

    @property
    def tokens(self) -> int:
        """Completion tokens of this call, by the module's rule."""
        return tool_tokens(self.arguments)

    def fragments(self, count: int = 2) -> list[str]:
        """The arguments JSON in `count` consecutive pieces (some may be empty), as a stream sends it."""
        text = self.arguments_json
        cuts = [len(text) * i // count for i in range(count + 1)]
        return [text[cuts[i]:cuts[i + 1]] for i in range(count)]


def forced_call(name: str, schema: object) -> ToolCall:
    """The call the simulator makes of tool `name` with parameter schema `schema`."""
    return ToolCall(name=name, arguments=build_arguments(schema))
