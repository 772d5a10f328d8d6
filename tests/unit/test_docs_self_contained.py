"""The README, docs/ and the code refer to nothing outside the repository: a user's clone has all of it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared|shared/spec|shared/design")


def test_no_reference_outside_the_repository() -> None:
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "src").rglob("*.py"),
             *(ROOT / "src").rglob("*.toml")]
    found = [f"{path.relative_to(ROOT)}:{n}" for path in files
             for n, line in enumerate(path.read_text("utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert found == []


def test_every_doc_the_readme_links_exists() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", readme))
    assert {"docs/product.md", "docs/design.md", "docs/settings.md", "docs/pricing.md"} <= linked
    assert [link for link in linked if not (ROOT / link).exists()] == []
