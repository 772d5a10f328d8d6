"""A response_format JSON schema as Gemini's `generationConfig.responseJsonSchema` takes it.

Google documents the subset `responseJsonSchema` honours (GenerationConfig in the Gemini API
reference; python-genai's `GenerationConfig.response_json_schema`): `$id`, `$defs`, `$ref`,
`$anchor`, `type`, `format`, `title`, `description`, `enum` (of strings and numbers), `items`,
`prefixItems`, `minItems`, `maxItems`, `minimum`, `maximum`, `anyOf`, `oneOf` (read as anyOf),
`properties`, `additionalProperties`, `required`, and its own `propertyOrdering`. "While the full JSON
Schema may be sent, not all features are supported": anything else would be ignored, and the answer
would not be held to it. So:

* kept as they are: the documented keywords;
* translated: `const` of a string or number becomes a one-value `enum` (the same constraint);
* dropped: the annotations `$schema`, `$comment`, `default` and `examples`, which constrain nothing;
* refused (SchemaRefused, with the keyword's path): every other keyword (`pattern`, `minLength`,
  `allOf`, `not`, `exclusiveMinimum`, `uniqueItems`...), and an `enum` or `const` of other values.
"""

from typing import Any

KEPT = frozenset({"$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum",
                  "items", "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf", "oneOf",
                  "properties", "additionalProperties", "required", "propertyOrdering"})
ANNOTATIONS = frozenset({"$schema", "$comment", "default", "examples"})
# Keywords whose value is a map of names to schemas, a schema, or a list of schemas.
_SCHEMA_MAPS = ("$defs", "properties")
_SCHEMA_VALUES = ("items", "additionalProperties")
_SCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf")
MAX_DEPTH = 64


class SchemaRefused(ValueError):
    """A schema keyword Gemini cannot take: `path` is where it stands (`.properties.name.pattern`)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path}: {what}")
        self.path = path
        self.what = what


def _scalar(value: Any) -> bool:
    return type(value) is str or type(value) is int or type(value) is float


def _schema(schema: Any, path: str, depth: int) -> Any:
    if type(schema) is bool:
        return schema  # true/false schemas (additionalProperties: false) stand as they are
    if type(schema) is not dict:
        raise SchemaRefused(path, "must be a JSON schema object")
    if depth > MAX_DEPTH:
        raise SchemaRefused(path, f"nests deeper than {MAX_DEPTH} levels")
    out: dict[str, Any] = {}
    for keyword, value in schema.items():
        at = f"{path}.{keyword}"
        if keyword in ANNOTATIONS:
            continue
        if keyword == "const":
            if not _scalar(value):
                raise SchemaRefused(at, "Gemini takes a const only of a string or a number")
            out["enum"] = [value]
        elif keyword not in KEPT:
            raise SchemaRefused(at, f"Gemini's responseJsonSchema does not take {keyword!r}; it takes "
                                    f"{', '.join(sorted(KEPT))}")
        elif keyword == "enum":
            if type(value) is not list or not all(_scalar(v) for v in value):
                raise SchemaRefused(at, "Gemini takes an enum only of strings and numbers")
            out[keyword] = value
        elif keyword in _SCHEMA_MAPS:
            if type(value) is not dict:
                raise SchemaRefused(at, "must be an object of schemas")
            out[keyword] = {name: _schema(sub, f"{at}.{name}", depth + 1) for name, sub in value.items()}
        elif keyword in _SCHEMA_VALUES:
            out[keyword] = _schema(value, at, depth + 1)
        elif keyword in _SCHEMA_LISTS:
            if type(value) is not list:
                raise SchemaRefused(at, "must be an array of schemas")
            out[keyword] = [_schema(sub, f"{at}[{i}]", depth + 1) for i, sub in enumerate(value)]
        else:
            out[keyword] = value
    return out


def gemini_schema(schema: Any) -> Any:
    """The schema as Gemini's responseJsonSchema takes it (the module's rules); SchemaRefused else."""
    return _schema(schema, "", 0)
