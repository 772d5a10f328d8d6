"""Versioned key-encryption keys (KEKs) and the key file that holds them.

A key ring is written as ``"1:<urlsafe-base64 of 32 bytes>,2:<...>"``; the highest version is the
primary, the one new records are wrapped with. Nothing in this module ever puts key material into
an exception message or a repr.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

KEY_BYTES = 32

_VERSION_RE = re.compile(r"[0-9]+")


class InvalidKeyRing(ValueError):
    """The key ring text or key file is unusable. The message never contains key material."""


class MissingKeyVersion(LookupError):
    """The ring has no key-encryption key for the requested version."""

    def __init__(self, version: int) -> None:
        super().__init__(f"no key-encryption key for version {version}")
        self.version = version


@dataclass(frozen=True)
class KeyRing:
    """Key-encryption keys by version (each 32 bytes); the highest version is the primary."""

    keys: dict[int, bytes]

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidKeyRing("key ring is empty")
        for version, key in self.keys.items():
            if not isinstance(version, int) or version <= 0:
                raise InvalidKeyRing("key versions must be positive integers")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise InvalidKeyRing(f"key version {version} must be exactly {KEY_BYTES} bytes")

    # A ring captured in a traceback with locals, or logged by accident, shows versions, not keys.
    def __repr__(self) -> str:
        return f"KeyRing(versions={sorted(self.keys)})"

    @property
    def primary_version(self) -> int:
        """The highest version: the one new records are wrapped with."""
        return max(self.keys)

    def key(self, version: int) -> bytes:
        """Return the key for ``version``; raise ``MissingKeyVersion`` if the ring lacks it."""
        try:
            return self.keys[version]
        except KeyError:
            raise MissingKeyVersion(version) from None


def generate_key() -> bytes:
    """Return a fresh random 32-byte key-encryption key from the OS CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


def parse_keyring(text: str) -> KeyRing:
    """Parse ``"1:<urlsafe-base64>,2:<...>"`` into a ``KeyRing``.

    Whitespace around entries is ignored and missing base64 padding is tolerated. Raises
    ``InvalidKeyRing`` on empty input, a malformed entry, bad base64, a key that is not 32 bytes,
    or a duplicate or non-positive version. Entries are named by position, never by content.
    """
    if not text or not text.strip():
        raise InvalidKeyRing("key ring is empty")
    keys: dict[int, bytes] = {}
    for position, raw_entry in enumerate(text.split(","), start=1):
        entry = raw_entry.strip()
        if not entry:
            raise InvalidKeyRing(f"key ring entry {position} is empty")
        version_text, colon, encoded = entry.partition(":")
        version_text, encoded = version_text.strip(), encoded.strip()
        if not colon or not _VERSION_RE.fullmatch(version_text):
            raise InvalidKeyRing(f"key ring entry {position} must look like '<positive integer>:<key>'")
        version = int(version_text)
        if version in keys:
            raise InvalidKeyRing(f"key ring entry {position}: duplicate version {version}")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
        except ValueError:  # binascii.Error, and non-ASCII text
            raise InvalidKeyRing(f"key ring entry {position}: key is not valid urlsafe base64") from None
        keys[version] = key
    return KeyRing(keys)


def format_keyring(ring: KeyRing) -> str:
    """Render ``ring`` in the text form ``parse_keyring`` reads, versions ascending."""
    return ",".join(
        f"{version}:{base64.urlsafe_b64encode(ring.keys[version]).decode('ascii')}"
        for version in sorted(ring.keys)
    )


def with_new_version(ring: KeyRing) -> KeyRing:
    """Return a copy of ``ring`` with a fresh key at ``primary_version + 1`` (the new primary)."""
    return KeyRing({**ring.keys, ring.primary_version + 1: generate_key()})


def load_or_create_key_file(path: Path, *, allow_create: bool) -> tuple[KeyRing, bool]:
    """Read the key ring at ``path``, or create it with one fresh key if allowed.

    Returns ``(ring, created)``. An existing file is refused if group or others have any
    permission on it. A missing file raises ``InvalidKeyRing`` unless
    ``allow_create``; then it is created with mode 0600 (never overwriting one that appears
    meanwhile), its parent directory included.
    """
    try:
        return _read_key_file(path), False
    except FileNotFoundError:
        if not allow_create:
            raise InvalidKeyRing(f"key file {path} does not exist") from None
    ring = KeyRing({1: generate_key()})
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first: use theirs, so all workers share one ring.
        return _read_key_file(path), False
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(format_keyring(ring) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return ring, True


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Atomically replace the key file at ``path`` with ``ring``, mode 0600, durably on disk."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(format_keyring(ring) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # Rotation rewraps records under the new key right after this: the new key must survive a crash.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_key_file(path: Path) -> KeyRing:
    # Check the mode on the opened descriptor, so the file checked is the file read.
    with path.open("r", encoding="ascii") as f:
        st = os.fstat(f.fileno())
        if st.st_mode & 0o077:
            raise InvalidKeyRing(
                f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                "it must be readable by its owner only (chmod 600)"
            )
        try:
            text = f.read()
        except UnicodeDecodeError:
            raise InvalidKeyRing(f"key file {path} is not ASCII text") from None
    try:
        return parse_keyring(text)
    except InvalidKeyRing as exc:
        raise InvalidKeyRing(f"key file {path}: {exc}") from None
