"""Envelope encryption of BYOK provider keys with AES-256-GCM.

Each record gets a fresh random 32-byte data key (DEK). The plaintext is encrypted under the DEK,
and the DEK is wrapped (AES-GCM encrypted) under the ring's primary key-encryption key (KEK). Both
encryptions take a fresh 12-byte random nonce and the same associated data, ``KeyContext``'s
canonical encoding of (format version, org id, record id, provider), so a blob copied to another
org, record or provider fails to decrypt.

Blob layout (offsets in bytes)::

    [0]        format byte (FORMAT_VERSION = 1)
    [1:5]      KEK version, 4-byte big-endian unsigned
    [5:17]     wrap nonce (12)
    [17:65]    wrapped DEK (48 = 32-byte DEK + 16-byte GCM tag)
    [65:77]    data nonce (12)
    [77:]      ciphertext + 16-byte GCM tag

Rotation rewraps only bytes [1:65]; the data part [65:] never changes. Every failure to decrypt
raises ``CredentialUnavailable`` ("this key needs to be re-added"); nothing returns ``None``.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from alumia.vault.keyring import KeyRing, MissingKeyVersion

FORMAT_VERSION = 1
NONCE_BYTES = 12
DEK_BYTES = 32
TAG_BYTES = 16
WRAPPED_DEK_BYTES = DEK_BYTES + TAG_BYTES

_VERSION_END = 5
_WRAP_NONCE_END = _VERSION_END + NONCE_BYTES
_WRAPPED_DEK_END = _WRAP_NONCE_END + WRAPPED_DEK_BYTES
_DATA_NONCE_END = _WRAPPED_DEK_END + NONCE_BYTES
_MIN_BLOB_BYTES = _DATA_NONCE_END + TAG_BYTES

_CHECK_PLAINTEXT = b"alumia-kek-check-v1"


class CredentialUnavailable(Exception):
    """A stored key cannot be decrypted; the user has to add it again."""

    def __init__(self) -> None:
        super().__init__("this key needs to be re-added")


@dataclass(frozen=True)
class KeyContext:
    """Where a ciphertext belongs; bound to it as AES-GCM associated data."""

    org_id: str
    record_id: str
    provider: str

    def associated_data(self) -> bytes:
        """Canonical encoding: the format byte, then each field as 4-byte big-endian length + UTF-8."""
        out = bytearray([FORMAT_VERSION])
        for value in (self.org_id, self.record_id, self.provider):
            encoded = value.encode("utf-8")
            out += len(encoded).to_bytes(4, "big")
            out += encoded
        return bytes(out)


_CHECK_CONTEXT = KeyContext("__kek_check__", "__kek_check__", "__kek_check__")


def encrypt(plaintext: str, ctx: KeyContext, ring: KeyRing) -> bytes:
    """Encrypt ``plaintext`` for ``ctx`` under a fresh data key wrapped by the primary KEK."""
    return _seal(plaintext.encode("utf-8"), ctx, ring, ring.primary_version)


def decrypt(blob: bytes, ctx: KeyContext, ring: KeyRing) -> str:
    """Decrypt a blob made by ``encrypt`` for the same ``ctx``.

    Raises ``CredentialUnavailable`` if the blob is malformed, was made for another context, has
    been tampered with, or its KEK version is missing from (or wrong in) ``ring``.
    """
    try:
        data_cipher = AESGCM(_unwrap_dek(blob, ctx, ring))
        plaintext = data_cipher.decrypt(
            blob[_WRAPPED_DEK_END:_DATA_NONCE_END], blob[_DATA_NONCE_END:], ctx.associated_data()
        )
        return plaintext.decode("utf-8")
    except (InvalidTag, MissingKeyVersion, ValueError) as exc:
        raise CredentialUnavailable() from exc


def blob_version(blob: bytes) -> int:
    """Return the KEK version in the blob's header; ``CredentialUnavailable`` if it is malformed."""
    try:
        return _header_version(blob)
    except ValueError as exc:
        raise CredentialUnavailable() from exc


def rewrap(blob: bytes, ctx: KeyContext, ring: KeyRing) -> bytes:
    """Rewrap the blob's data key under the primary KEK, leaving the data part unchanged.

    A blob already on ``ring.primary_version`` is returned as is, so a rotation can be re-run
    and resumed. Raises ``CredentialUnavailable`` if the data key cannot be unwrapped.
    """
    if blob_version(blob) == ring.primary_version:
        return blob
    try:
        dek = _unwrap_dek(blob, ctx, ring)
    except (InvalidTag, MissingKeyVersion, ValueError) as exc:
        raise CredentialUnavailable() from exc
    return _wrap(dek, ctx, ring, ring.primary_version) + blob[_WRAPPED_DEK_END:]


def make_check_value(ring: KeyRing, version: int) -> bytes:
    """Encrypt a fixed constant under exactly KEK ``version``, for ``verify_check_value`` at start."""
    return _seal(_CHECK_PLAINTEXT, _CHECK_CONTEXT, ring, version)


def verify_check_value(ring: KeyRing, version: int, blob: bytes) -> bool:
    """True if ``blob`` is ``version``'s check value and ``ring`` holds the right key for it.

    False, never an exception, for a wrong or missing key, another version's check value, or a
    malformed blob.
    """
    try:
        if _header_version(blob) != version:
            return False
        plaintext = AESGCM(_unwrap_dek(blob, _CHECK_CONTEXT, ring)).decrypt(
            blob[_WRAPPED_DEK_END:_DATA_NONCE_END], blob[_DATA_NONCE_END:], _CHECK_CONTEXT.associated_data()
        )
    except (InvalidTag, MissingKeyVersion, ValueError):
        return False
    return hmac.compare_digest(plaintext, _CHECK_PLAINTEXT)


def _seal(plaintext: bytes, ctx: KeyContext, ring: KeyRing, version: int) -> bytes:
    dek = AESGCM.generate_key(bit_length=DEK_BYTES * 8)
    data_nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(dek).encrypt(data_nonce, plaintext, ctx.associated_data())
    return _wrap(dek, ctx, ring, version) + data_nonce + ciphertext


def _wrap(dek: bytes, ctx: KeyContext, ring: KeyRing, version: int) -> bytes:
    """Header and wrapped data key: blob bytes [0:65]."""
    wrap_nonce = os.urandom(NONCE_BYTES)
    wrapped = AESGCM(ring.key(version)).encrypt(wrap_nonce, dek, ctx.associated_data())
    return bytes([FORMAT_VERSION]) + version.to_bytes(4, "big") + wrap_nonce + wrapped


def _header_version(blob: bytes) -> int:
    if len(blob) < _MIN_BLOB_BYTES:
        raise ValueError("blob too short")
    if blob[0] != FORMAT_VERSION:
        raise ValueError("unknown blob format")
    return int.from_bytes(blob[1:_VERSION_END], "big")


def _unwrap_dek(blob: bytes, ctx: KeyContext, ring: KeyRing) -> bytes:
    # The KEK is passed straight to AESGCM rather than held in a local, so a traceback captured
    # with locals (error trackers do this) does not carry it.
    dek = AESGCM(ring.key(_header_version(blob))).decrypt(
        blob[_VERSION_END:_WRAP_NONCE_END], blob[_WRAP_NONCE_END:_WRAPPED_DEK_END], ctx.associated_data()
    )
    if len(dek) != DEK_BYTES:
        raise ValueError("wrapped data key has the wrong length")
    return dek
