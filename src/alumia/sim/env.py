"""Where each provider lives on the simulator, and the environment that points a gateway at it.

Each provider sits under its own name followed by the path of its real base URL, so the gateway's
adapters append exactly the paths they append in production: groq -> ``/groq/openai/v1``, deepseek ->
``/deepseek``, zhipu -> ``/zhipu/api/paas/v4``, openai -> ``/openai/v1``.
"""

import secrets
from functools import cache
from urllib.parse import urlparse

from alumia.domain.catalog import PROVIDER_NAMES, load_catalog


@cache
def _prefixes() -> dict[str, str]:
    # The catalog is packaged data that cannot change while the process runs: read it once.
    providers = load_catalog().providers
    return {name: f"/{name}{urlparse(p.base_url).path.rstrip('/')}" for name, p in providers.items()}


def sim_path_prefix(provider: str) -> str:
    """The path under which the simulator serves `provider`'s API (its base URL without host)."""
    try:
        return _prefixes()[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}") from None


def sim_base_url(host: str, port: int, provider: str) -> str:
    """The base URL the gateway uses for `provider` when the simulator listens on host:port."""
    # A bare IPv6 address needs brackets in a URL.
    netloc = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    return f"http://{netloc}{sim_path_prefix(provider)}"


def sim_env(host: str, port: int) -> dict[str, str]:
    """`ALUMIA_BASE_URL_<P>` and `ALUMIA_PLATFORM_KEY_<P>` for all 14 providers, pointing at the simulator.

    The platform keys are made fresh on every call: they are fake, the simulator accepts any key that
    does not contain "invalid", and nothing shaped like a real key should sit in the repository.
    """
    env: dict[str, str] = {}
    for provider in PROVIDER_NAMES:
        suffix = provider.upper()
        env[f"ALUMIA_BASE_URL_{suffix}"] = sim_base_url(host, port, provider)
        env[f"ALUMIA_PLATFORM_KEY_{suffix}"] = f"sim-platform-{provider}-" + secrets.token_hex(12)
    return env
