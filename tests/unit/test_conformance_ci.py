"""Without OpenAI's schema beside the repository a conformance check skips, except under CI=true, where
it fails: CI lays ../shared/ beside the clone, so a missing schema there means a broken setup."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance.py"
PROBE = '''
import conformance

def test_a_check() -> None:
    conformance.pytest_skip_if_absent()
'''


def run_without_the_schema(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    # conformance.py looks for ../../shared/ from where it lives: here that is tmp_path/shared, absent.
    where = tmp_path / "a" / "tests"
    where.mkdir(parents=True)
    shutil.copy(CONFORMANCE, where / "conformance.py")
    (where / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           str(where / "test_probe.py")], cwd=where, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_missing_schema_skips_outside_ci(tmp_path: Path) -> None:
    result = run_without_the_schema(tmp_path, None)
    assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout


def test_a_missing_schema_fails_under_ci(tmp_path: Path) -> None:
    result = run_without_the_schema(tmp_path, "true")
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout
    assert "CI=true requires it" in result.stdout
