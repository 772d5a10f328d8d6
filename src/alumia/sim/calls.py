"""The simulator's record of the calls it received (`GET /_sim/calls`) and of revoked keys.

Tests use it to prove which key the gateway sent where (BYOK or platform) without the simulator ever
holding a key: only its SHA-256 is kept.
"""

import hashlib
import time
from collections import deque
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

    def record(self, *, provider: str, model: str | None, key: str | None, stream: bool, path: str) -> None:
        """Remember one call; the key is reduced to its SHA-256 here and not kept."""
        self._calls.append({
            "provider": provider,
            "model": model,
            "keySha256": hashlib.sha256(key.encode()).hexdigest() if key is not None else None,
            "stream": stream,
            "path": path,
            "time": time.time(),
        })

    def snapshot(self) -> list[dict[str, Any]]:
        """The recorded calls in arrival order."""
        return list(self._calls)

    def clear(self) -> None:
        """Forget every recorded call."""
        self._calls.clear()
