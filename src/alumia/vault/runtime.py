"""The vault a running process holds: its key ring and a bounded in-memory cache of plaintexts."""

from collections import OrderedDict

from alumia.vault.envelope import KeyContext, decrypt, encrypt
from alumia.vault.keyring import KeyRing


class Vault:
    """Encrypts new keys and hands out plaintexts for calls.

    A key record never changes its plaintext (replacing a key makes a new record, rotation only
    rewraps), so a plaintext cached by record id stays right; deactivation is enforced by the
    routing query, which reads the active record on every call. The cache lives only in this
    process's memory and is bounded.
    """

    def __init__(self, ring: KeyRing, cache_size: int = 10_000) -> None:
        self.ring = ring
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    def seal(self, plaintext: str, *, org_id: str, record_id: str, provider: str) -> tuple[bytes, int]:
        """Encrypt a new key for its record; returns the blob and the KEK version that wraps it."""
        ctx = KeyContext(org_id=org_id, record_id=record_id, provider=provider)
        return encrypt(plaintext, ctx, self.ring), self.ring.primary_version

    def plaintext(self, blob: bytes, *, org_id: str, record_id: str, provider: str) -> str:
        """The key of a record, from the cache or decrypted once (CredentialUnavailable on failure)."""
        cached = self._cache.get(record_id)
        if cached is not None:
            self._cache.move_to_end(record_id)
            return cached
        ctx = KeyContext(org_id=org_id, record_id=record_id, provider=provider)
        plaintext = decrypt(blob, ctx, self.ring)
        self._cache[record_id] = plaintext
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return plaintext

    def __repr__(self) -> str:
        return f"Vault(versions={sorted(self.ring.keys)}, cached={len(self._cache)})"
