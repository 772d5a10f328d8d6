"""docs/settings.md documents every setting, exactly as config.py declares it."""

from alumia.config import Settings
from alumia.settings_doc import docs_path, settings_markdown, variable_name


def test_every_setting_is_in_docs_settings_md() -> None:
    page = docs_path().read_text("utf-8")
    missing = [variable_name(f) for f in Settings.model_fields if f"| `{variable_name(f)}` |" not in page]
    assert not missing, f"docs/settings.md lacks {missing}: run `make settings-doc`"


def test_docs_settings_md_is_what_config_py_generates() -> None:
    assert docs_path().read_text("utf-8") == settings_markdown(), "run `make settings-doc`"


def test_every_setting_says_what_it_does() -> None:
    assert [f for f, info in Settings.model_fields.items() if not (info.description or "").strip()] == []
