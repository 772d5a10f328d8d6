"""The simulator's record of the calls it received (`GET /_sim/calls`) and of revoked keys.

Tests use it to prove which key the gateway sent where (BYOK or platform) without the simulator ever
holding a key: only its SHA-256 is kept. Each entry also has ``received``: the request fields tests
check the gateway sent (the output-limit fields, ``n``...), as the simulator parsed them, and under
``models`` every top-level ``model`` value of the body in order, so a body that carries two models
shows both.
"""

import hashlib
import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

MAX_CALLS = 10_000


class CallLog:
    """A bounded, in-memory list of received calls, oldest first."""

    def __init__(self, maxlen: int = MAX_CALLS) -> None:
        # Bounded so a long benchmark run cannot grow the simulator's memory without limit.
        self._calls: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._revoked: set[str] = set()

    def revoke(self, key_sha256: str) -> None:
        """From now on, reject the key with this SHA-256, as a provider does after a key is revoked."""
        self._revoked.add(key_sha256)

    def is_revoked(self, key: str) -> bool:
        """Whether the key was revoked."""
        return bool(self._revoked) and hashlib.sha256(key.encode()).hexdigest() in self._revoked

    def record(self, *, provider: str, model: str | None, key: str | None, stream: bool, path: str,
               received: dict[str, Any] | None = None) -> None:
        """Remember one call; the key is reduced to its SHA-256 here and not kept."""
        self._calls.append({
            "provider": provider,
            "model": model,
            "keySha256": hashlib.sha256(key.encode()).hexdigest() if key is not None else None,
            "stream": stream,
            "path": path,
            "time": time.time(),
            "received": received or {},
        })

    def snapshot(self) -> list[dict[str, Any]]:
        """The recorded calls in arrival order."""
        return list(self._calls)

    def clear(self) -> None:
        """Forget every recorded call."""
        self._calls.clear()


def _top_level_models(raw: bytes) -> list[Any]:
    """Every value of the body's top-level "model" keys, duplicates included, in order."""
    objects: list[list[tuple[str, Any]]] = []

    def keep(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        objects.append(pairs)  # inner objects close first: the top-level one comes last
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=keep)
    except ValueError:
        return []
    return [value for name, value in objects[-1] if name == "model"] if objects else []


def received_fields(raw: bytes, fields: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The `received` record of a request body: `names` that `fields` holds, and its `models`.

    `fields` is the body as parsed (duplicate keys resolved, the last one winning); the raw body is
    parsed again, keeping duplicates, only when it can hold more than one model.
    """
    out = {name: fields[name] for name in names if name in fields}
    if raw.count(b'"model"') > 1:
        out["models"] = _top_level_models(raw)
    elif "model" in fields:
        out["models"] = [fields["model"]]
    return out
