"""OpenAI's published API schema as a JSON-Schema validator, shared by the whole test suite.

The schema (`shared/conformance/openai/openapi.yaml`, beside the repository, not in it) is an OpenAPI
document: its component schemas are JSON Schema 2020-12 except for two OpenAPI 3.0 habits a plain
validator would misread, which `to_json_schema` rewrites:

* ``nullable: true`` means "or null"; a JSON-Schema validator ignores the keyword and would reject the
  nulls OpenAI itself sends (``"usage": null`` on stream chunks, ``"logprobs": null``, ...).
* a boolean ``exclusiveMinimum``/``exclusiveMaximum`` modifies ``minimum``/``maximum``; in 2020-12 the
  keyword is the bound itself.

References (``#/components/schemas/...``) are left as they are and resolved through a `referencing`
registry that holds the converted document under one URI.

Use `validate(name, instance)` in tests, after `pytest_skip_if_absent()` (or mark a test with
`requires_spec`) so that a machine without `shared/` skips with a notice instead of failing.
"""

import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "openai" / "openapi.yaml"
SPEC_URI = "urn:alumia:conformance:openai-openapi"
SKIP_REASON = (f"OpenAI conformance schema not found at {SPEC_PATH}; it is read from ../shared/ beside the "
               "repository and is not copied into it, so schema checks are skipped here")
SPEC_AVAILABLE = SPEC_PATH.is_file()
# CI lays ../shared/ beside the clone: there a missing schema is a broken setup, not a reason to skip
# (as with PostgreSQL and Chromium).
IN_CI = os.environ.get("CI") == "true"

requires_spec = pytest.mark.skipif(not SPEC_AVAILABLE and not IN_CI, reason=SKIP_REASON)

# Keywords whose values are data, not schemas: converting inside them could change what they say.
_DATA_KEYWORDS = frozenset({"example", "examples", "default", "enum", "const"})


def pytest_skip_if_absent() -> None:
    """Skip the calling test, with a clear reason, when the schema file is not on this machine; under
    CI=true fail it instead."""
    if not SPEC_AVAILABLE:
        if IN_CI:
            pytest.fail(f"{SKIP_REASON}; CI=true requires it")
        pytest.skip(SKIP_REASON)


def to_json_schema(node: Any) -> Any:
    """A copy of an OpenAPI schema (or any part of one) rewritten as JSON Schema 2020-12."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: value if key in _DATA_KEYWORDS or key.startswith("x-") else to_json_schema(value)
           for key, value in node.items()}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    # Only a boolean `nullable` is the keyword; a property that happens to be named "nullable" maps to
    # a schema object and is left alone.
    nullable = out.get("nullable")
    if isinstance(nullable, bool):
        del out["nullable"]
        if nullable:
            # anyOf rather than adding "null" to `type`, so that an `enum` or `$ref` beside it is honoured.
            return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _schemas() -> dict[str, Any]:
    # Loading the 3 MB document takes most of a second: once per process is enough.
    with SPEC_PATH.open("rb") as f:
        spec = yaml.load(f, Loader=yaml.CSafeLoader)
    return to_json_schema(spec["components"]["schemas"])


@cache
def _registry() -> Registry:
    document = {"components": {"schemas": _schemas()}}
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


@cache
def validator(schema_name: str) -> Draft202012Validator:
    """A validator for one component schema, e.g. ``CreateChatCompletionResponse``."""
    if schema_name not in _schemas():
        raise KeyError(f"{schema_name!r} is not a component schema of {SPEC_PATH.name}")
    return Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"},
                                registry=_registry())


def validate(schema_name: str, instance: Any) -> None:
    """Raise `jsonschema.ValidationError` unless `instance` conforms to the named component schema."""
    pytest_skip_if_absent()
    error = best_match(validator(schema_name).iter_errors(instance))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise ValidationError(f"{schema_name} at {where}: {error.message}")


__all__ = ["SKIP_REASON", "SPEC_AVAILABLE", "SPEC_PATH", "ValidationError", "pytest_skip_if_absent",
           "requires_spec", "to_json_schema", "validate", "validator"]
