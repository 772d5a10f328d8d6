"""Opening the vault at start (failing closed) and rotating the key-encryption key."""

import logging
from dataclasses import dataclass

from alumia.clock import utcnow
from alumia.config import Settings
from alumia.storage import byok, kek_checks
from alumia.storage.db import Database
from alumia.vault.envelope import KeyContext, make_check_value, rewrap, verify_check_value
from alumia.vault.keyring import (
    InvalidKeyRing,
    KeyRing,
    load_or_create_key_file,
    parse_keyring,
    with_new_version,
    write_key_file,
)
from alumia.vault.runtime import Vault

log = logging.getLogger("alumia.vault")
KEY_FILE_NAME = "master.keys"


class VaultStartupError(RuntimeError):
    """The key-encryption keys are missing or wrong: the service must not start."""


async def _has_sealed_data(db: Database) -> bool:
    async with db.read() as conn:
        return bool(await kek_checks.all_checks(conn)) or bool(await byok.kek_versions_in_use(conn))


async def load_ring(db: Database, settings: Settings) -> KeyRing:
    """The key ring from ALUMIA_MASTER_KEYS, or on the embedded default from the data dir's key file.

    A key file is generated only when nothing is encrypted yet; in production the variable is required.
    """
    if settings.master_keys is not None:
        try:
            return parse_keyring(settings.master_keys.get_secret_value())
        except InvalidKeyRing as exc:
            raise VaultStartupError(f"ALUMIA_MASTER_KEYS is invalid: {exc}") from exc
    if settings.is_production:
        raise VaultStartupError("ALUMIA_MASTER_KEYS is required when ALUMIA_ENV=production")
    path = settings.data_dir / KEY_FILE_NAME
    try:
        ring, created = load_or_create_key_file(path, allow_create=not await _has_sealed_data(db))
    except InvalidKeyRing as exc:
        raise VaultStartupError(f"cannot use the key file {path}: {exc}") from exc
    if created:
        log.warning("generated a new key-encryption key at %s (mode 0600); back it up, and set "
                    "ALUMIA_MASTER_KEYS in production", path)
    return ring


async def check_ring(db: Database, ring: KeyRing) -> None:
    """Fail unless every version some record needs is present and every known version is the right key."""
    async with db.write() as conn:
        checks = await kek_checks.all_checks(conn)
        for version, value in checks.items():
            if version in ring.keys and not verify_check_value(ring, version, value):
                raise VaultStartupError(f"the key-encryption key for version {version} is wrong")
        missing = await byok.kek_versions_in_use(conn) - set(ring.keys)
        if missing:
            raise VaultStartupError(
                f"stored BYOK keys need key-encryption key version(s) {sorted(missing)}, not configured")
        for version in set(ring.keys) - set(checks):
            await kek_checks.insert_check(conn, version, make_check_value(ring, version), utcnow())


async def open_vault(db: Database, settings: Settings) -> Vault:
    """The process's vault, after the fail-closed checks."""
    ring = await load_ring(db, settings)
    await check_ring(db, ring)
    return Vault(ring)


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What a rotation did."""

    primary_version: int
    added_version: bool
    rewrapped: int


async def rewrap_all(db: Database, ring: KeyRing, batch_size: int = 200) -> int:
    """Rewrap every record onto the primary version, a committed batch at a time (resumable)."""
    done = 0
    while True:
        async with db.write() as conn:
            rows = await byok.ciphertexts_not_on(conn, ring.primary_version, batch_size)
            for row in rows:
                ctx = KeyContext(org_id=row["org_id"], record_id=row["id"], provider=row["provider"])
                blob = rewrap(bytes(row["ciphertext"]), ctx, ring)
                await byok.replace_ciphertext(conn, row["id"], row["kek_version"], blob,
                                              ring.primary_version)
        done += len(rows)
        if len(rows) < batch_size:
            return done


async def rotate(db: Database, settings: Settings) -> RotationResult:
    """Add a KEK version (key file only; with ALUMIA_MASTER_KEYS the operator adds it) and rewrap."""
    ring = await load_ring(db, settings)
    await check_ring(db, ring)
    added = False
    if settings.master_keys is None:
        ring = with_new_version(ring)
        write_key_file(settings.data_dir / KEY_FILE_NAME, ring)
        await check_ring(db, ring)
        added = True
    return RotationResult(ring.primary_version, added, await rewrap_all(db, ring))
