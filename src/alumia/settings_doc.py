"""docs/settings.md, generated from `Settings` so that the reference cannot drift from the code.

`alumia settings --markdown > docs/settings.md` (or `make settings-doc`) rewrites it; a test fails when
the file differs from what this module generates, so a setting added to config.py without regenerating
the page is caught.
"""

from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from alumia.config import Settings

# Settings read from one variable per provider rather than one variable of their own.
PER_PROVIDER = {"platform_keys": "ALUMIA_PLATFORM_KEY_<PROVIDER>", "base_urls": "ALUMIA_BASE_URL_<PROVIDER>"}

_HEADER = """# Settings

<!-- Generated from src/alumia/config.py by `alumia settings --markdown`; edit config.py, then run
     `make settings-doc`. tests/unit/test_settings_doc.py fails when this page is out of date. -->

Every setting is an environment variable read once at start (`src/alumia/config.py`); an invalid value
stops `alumia serve` and `alumia demo` with one line naming the variable. `<PROVIDER>` is one of the 14
provider names in upper case (`OPENAI`, `ANTHROPIC`, `GEMINI`, ...; `alumia sim --print-env` lists
them all). Why the limits have the defaults they have is in [behaviour.md](behaviour.md).

| variable | default | allowed | what it does |
|---|---|---|---|
"""


def variable_name(field: str) -> str:
    """The environment variable a setting is read from."""
    return PER_PROVIDER.get(field, f"ALUMIA_{field.upper()}")


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined or info.default is None:
        return "unset"
    if info.default == "":
        return "empty"
    value: Any = info.default
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        mib, kib = divmod(value, 1024 * 1024)
        return f"{value:,} ({mib} MiB)" if not kib else f"{value:,} ({value // 1024} KiB)"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _allowed(info: FieldInfo) -> str:
    annotation = str(info.annotation)
    if "Literal" in annotation:
        return " or ".join(f"`{a}`" for a in info.annotation.__args__)  # type: ignore[union-attr]
    kind = ("integer" if info.annotation is int else "number" if info.annotation is float
            else "date" if "date" in annotation else "path" if "Path" in annotation
            else "secret" if "SecretStr" in annotation else "text")
    bounds = []
    for rule in info.metadata:
        if isinstance(rule, Ge):
            bounds.append(f"≥ {rule.ge:,}")
        elif isinstance(rule, Gt):
            bounds.append(f"> {rule.gt:,}")
        elif isinstance(rule, Le):
            bounds.append(f"≤ {rule.le:,}")
    return ", ".join([kind, *bounds])


def settings_markdown() -> str:
    """The whole of docs/settings.md: a row per field of `Settings`, in the order config.py declares them."""
    rows = []
    for field, info in Settings.model_fields.items():
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{variable_name(field)}` | {_default(info)} | {_allowed(info)} | {description} |")
    return _HEADER + "\n".join(rows) + "\n"


def docs_path() -> Path:
    """Where the page lives in a source checkout."""
    return Path(__file__).resolve().parents[2] / "docs" / "settings.md"
