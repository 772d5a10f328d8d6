"""The LiteLLM proxy as a benchmark target: installed into its own virtual environment, run offline.

The version is pinned. 1.108.7 is the newest release whose `litellm[proxy]` installs from PyPI as
this machine reaches it (checked 2026-12-07): 1.108.8-1.108.13 pin `litellm-enterprise==0.1.79.post2`,
1.108.14-1.109.x `litellm-proxy-extras` 0.4.110.post1/0.4.113, and 1.110.x a `litellm-proxy` package,
none of which the index offers.

LiteLLM runs with one uvicorn worker, no database, a master key, and a config that maps the
benchmark's model to the fast upstream. It must not reach the internet: the model cost map is the
packaged one (LITELLM_LOCAL_MODEL_COST_MAP), telemetry is vetoed, Hugging Face is offline, and
LITELLM_MODE=PRODUCTION keeps it from reading a `.env` file.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fast_upstream import MODEL

LITELLM_VERSION = "1.108.7"
VENV = Path(__file__).resolve().with_name(".litellm-venv")
STAMP = ".bench-installed"
INSTALL_TIMEOUT_S = 900
# The catalog's price of gpt-5.6-luna (src/alumia/domain/data/models.toml), so LiteLLM prices calls too.
INPUT_USD_PER_TOKEN, OUTPUT_USD_PER_TOKEN = 0.2e-6, 1.2e-6
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_LOG": "ERROR",  # also turns uvicorn's access log off, as `alumia serve` runs without one
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DISABLE_ADMIN_UI": "True",
}


@dataclass(frozen=True)
class LiteLLMInstall:
    """Where LiteLLM's command is, or why the benchmark runs without it."""

    executable: Path | None
    note: str


def _installed(venv: Path) -> bool:
    stamp = venv / STAMP
    return (venv / "bin" / "litellm").exists() and stamp.exists() and stamp.read_text() == LITELLM_VERSION


def _pip_failure(log: Path) -> str:
    """The lines of pip's log that say what failed."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if line.startswith("ERROR") or "rror:" in line]
    return " / ".join(lines[-3:])[:600] or "see " + str(log)


def ensure_installed(venv: Path = VENV) -> LiteLLMInstall:
    """Install litellm[proxy]==LITELLM_VERSION into `venv` unless it is already there; never raises."""
    if _installed(venv):
        return LiteLLMInstall(venv / "bin" / "litellm", f"litellm {LITELLM_VERSION} from {venv}")
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once; a few minutes) ...",
          file=sys.stderr, flush=True)
    venv.mkdir(parents=True, exist_ok=True)
    log = venv / "install.log"
    try:
        with log.open("wb") as out:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=out, stderr=subprocess.STDOUT,
                           check=True, timeout=120)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", f"litellm[proxy]=={LITELLM_VERSION}"],
                           stdout=out, stderr=subprocess.STDOUT, check=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        return LiteLLMInstall(None, f"installing it took longer than {exc.timeout:.0f} s")
    except subprocess.CalledProcessError as exc:
        return LiteLLMInstall(None, f"installing litellm[proxy]=={LITELLM_VERSION} failed (exit status "
                                    f"{exc.returncode}): {_pip_failure(log)}")
    except OSError as exc:
        return LiteLLMInstall(None, f"installing litellm[proxy]=={LITELLM_VERSION} failed: {exc}")
    (venv / STAMP).write_text(LITELLM_VERSION)
    return LiteLLMInstall(venv / "bin" / "litellm", f"litellm {LITELLM_VERSION}, installed now into {venv}")


def package_versions(venv: Path = VENV, names: tuple[str, ...] = ("litellm", "aiohttp", "uvicorn")) -> str:
    """"name version, ..." of packages in LiteLLM's environment, for the report."""
    code = ("import importlib.metadata as m, sys; "
            "print(', '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))")
    try:
        done = subprocess.run([str(venv / "bin" / "python"), "-c", code, *names], capture_output=True,
                              text=True, timeout=30, check=True)
    except (subprocess.SubprocessError, OSError):
        return "unknown"
    return done.stdout.strip()


def write_config(directory: Path, upstream_url: str, upstream_key: str) -> tuple[Path, str]:
    """A config (JSON is YAML) routing MODEL to the upstream; (its path, the proxy's master key)."""
    master_key = "sk-bench-master-" + secrets.token_hex(12)
    config = {
        "model_list": [{
            "model_name": MODEL,
            "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream_url, "api_key": upstream_key},
            "model_info": {"input_cost_per_token": INPUT_USD_PER_TOKEN,
                           "output_cost_per_token": OUTPUT_USD_PER_TOKEN},
        }],
        "general_settings": {"master_key": master_key},
    }
    path = directory / "litellm-config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path, master_key


def litellm_env(base: dict[str, str], home: Path) -> dict[str, str]:
    """The environment LiteLLM runs in: `base` without Python paths, offline settings, its own HOME."""
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **OFFLINE_ENV, "HOME": str(home)}


def litellm_argv(executable: Path, config: Path, port: int) -> list[str]:
    """The command that starts the proxy with one worker on 127.0.0.1:`port`."""
    return [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1"]
