"""A gateway that serves SQLite without Stripe does not load Stripe's SDK or asyncpg (~25 MiB each).

A fresh interpreter is the point: the test process itself has imported both long before.
"""

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_app_module_leaves_stripe_and_asyncpg_unloaded() -> None:
    probe = "import sys, alumia.app; print(sorted({'stripe', 'asyncpg', 'httpx'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": str(SRC), "PATH": ""}, timeout=60)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr
