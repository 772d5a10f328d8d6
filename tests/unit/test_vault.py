"""Vault: envelope encryption, key ring and masking (security.md properties 2-7)."""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import stat
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alumia.vault.envelope import (
    CredentialUnavailable,
    KeyContext,
    blob_version,
    decrypt,
    encrypt,
    make_check_value,
    rewrap,
    verify_check_value,
)
from alumia.vault.keyring import (
    InvalidKeyRing,
    KeyRing,
    MissingKeyVersion,
    format_keyring,
    generate_key,
    load_or_create_key_file,
    parse_keyring,
    with_new_version,
    write_key_file,
)
from alumia.vault.masking import mask_key

# Offsets as documented in envelope.py's module docstring, restated here so the test checks them.
WRAP_NONCE = slice(5, 17)
DATA_NONCE = slice(65, 77)
DATA_PART = slice(65, None)


def fake_provider_key() -> str:
    return "sk-ant-test-" + secrets.token_hex(20)


def new_context(provider: str = "anthropic") -> KeyContext:
    return KeyContext(
        org_id="org_" + secrets.token_hex(4), record_id="key_" + secrets.token_hex(4), provider=provider
    )


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def key_material_forms(ring: KeyRing) -> list[str]:
    forms: list[str] = []
    for key in ring.keys.values():
        forms += [b64(key), b64(key).rstrip("="), base64.b64encode(key).decode(), key.hex(), repr(key)]
    return forms


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({1: generate_key()})


@pytest.fixture
def ctx() -> KeyContext:
    return new_context()


# --- round trip ------------------------------------------------------------------------------


def test_round_trip(ring: KeyRing, ctx: KeyContext) -> None:
    plaintext = fake_provider_key()
    blob = encrypt(plaintext, ctx, ring)
    assert decrypt(blob, ctx, ring) == plaintext
    assert blob_version(blob) == 1


def test_ciphertext_does_not_contain_plaintext(ring: KeyRing, ctx: KeyContext) -> None:
    plaintext = fake_provider_key()
    blob = encrypt(plaintext, ctx, ring)
    assert plaintext.encode() not in blob
    assert plaintext.encode()[-16:] not in blob
    assert ring.key(1) not in blob


def test_same_plaintext_encrypts_differently(ring: KeyRing, ctx: KeyContext) -> None:
    plaintext = fake_provider_key()
    assert encrypt(plaintext, ctx, ring) != encrypt(plaintext, ctx, ring)


def test_associated_data_is_unambiguous() -> None:
    # A separator join would make these collide; length prefixes must not.
    assert KeyContext("a", "bc", "d").associated_data() != KeyContext("ab", "c", "d").associated_data()
    assert KeyContext("a:b", "c", "d").associated_data() != KeyContext("a", "b:c", "d").associated_data()
    assert KeyContext("a", "b", "c").associated_data() == KeyContext("a", "b", "c").associated_data()


# --- property 2: swapped ciphertexts fail ------------------------------------------------------


@pytest.mark.parametrize("field", ["org_id", "record_id", "provider"])
def test_swapped_context_fails(ring: KeyRing, ctx: KeyContext, field: str) -> None:
    blob = encrypt(fake_provider_key(), ctx, ring)
    other = dataclasses.replace(ctx, **{field: getattr(ctx, field) + "x"})
    with pytest.raises(CredentialUnavailable, match=r"^this key needs to be re-added$"):
        decrypt(blob, other, ring)


def test_blob_moved_to_another_row_fails(ring: KeyRing) -> None:
    ctx_a, ctx_b = new_context("openai"), new_context("openai")
    blob_a = encrypt(fake_provider_key(), ctx_a, ring)
    with pytest.raises(CredentialUnavailable):
        decrypt(blob_a, ctx_b, ring)


# --- property 3: tampering fails closed --------------------------------------------------------


def test_every_single_bit_flip_fails(ring: KeyRing, ctx: KeyContext) -> None:
    blob = encrypt(fake_provider_key(), ctx, ring)
    for index in range(len(blob)):
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[index] ^= 1 << bit
            with pytest.raises(CredentialUnavailable):
                decrypt(bytes(tampered), ctx, ring)


def test_truncated_or_extended_blob_fails(ring: KeyRing, ctx: KeyContext) -> None:
    blob = encrypt(fake_provider_key(), ctx, ring)
    for length in range(len(blob)):
        with pytest.raises(CredentialUnavailable):
            decrypt(blob[:length], ctx, ring)
    with pytest.raises(CredentialUnavailable):
        decrypt(blob + b"\x00", ctx, ring)


def test_unknown_format_byte_fails(ring: KeyRing, ctx: KeyContext) -> None:
    blob = encrypt(fake_provider_key(), ctx, ring)
    for fmt in (0, 2, 255):
        garbled = bytes([fmt]) + blob[1:]
        with pytest.raises(CredentialUnavailable):
            decrypt(garbled, ctx, ring)
        with pytest.raises(CredentialUnavailable):
            blob_version(garbled)


# --- property 4: nonces are unique ---------------------------------------------------------------


def test_nonces_unique_over_100k_encryptions(ring: KeyRing, ctx: KeyContext) -> None:
    n = 100_000
    blobs = [encrypt("x", ctx, ring) for _ in range(n)]
    data_nonces = {blob[DATA_NONCE] for blob in blobs}
    wrap_nonces = {blob[WRAP_NONCE] for blob in blobs}
    assert all(len(nonce) == 12 for nonce in data_nonces | wrap_nonces)
    assert len(data_nonces) == n
    assert len(wrap_nonces) == n
    # The offsets really are the nonces: the documented layout decrypts.
    assert decrypt(blobs[0], ctx, ring) == "x"


# --- property 5: rotation ------------------------------------------------------------------------


def test_rotation(ring: KeyRing) -> None:
    records = [(new_context(), fake_provider_key()) for _ in range(5)]
    blobs = [encrypt(plaintext, ctx, ring) for ctx, plaintext in records]

    ring2 = with_new_version(ring)
    assert ring2.primary_version == 2
    assert ring2.key(1) == ring.key(1)
    for (ctx, plaintext), blob in zip(records, blobs, strict=True):
        assert decrypt(blob, ctx, ring2) == plaintext

    # Rewrap the first three only, as a rotation interrupted part-way would.
    rewrapped = [rewrap(blob, ctx, ring2) for (ctx, _), blob in zip(records[:3], blobs[:3], strict=True)]
    for (ctx, plaintext), old, new in zip(records[:3], blobs[:3], rewrapped, strict=True):
        assert blob_version(new) == 2
        assert new[DATA_PART] == old[DATA_PART]
        assert new[WRAP_NONCE] != old[WRAP_NONCE]
        assert decrypt(new, ctx, ring2) == plaintext
        assert rewrap(new, ctx, ring2) == new

    # Resuming: rewrapping everything again moves only what is left on v1.
    resumed = [
        rewrap(blob, ctx, ring2) for (ctx, _), blob in zip(records, rewrapped + blobs[3:], strict=True)
    ]
    assert resumed[:3] == rewrapped
    assert all(blob_version(blob) == 2 for blob in resumed)

    retired = KeyRing({2: ring2.key(2)})
    for (ctx, plaintext), blob in zip(records, resumed, strict=True):
        assert decrypt(blob, ctx, retired) == plaintext
    for (ctx, _), blob in zip(records, blobs, strict=True):
        with pytest.raises(CredentialUnavailable):
            decrypt(blob, ctx, retired)
        with pytest.raises(CredentialUnavailable):
            rewrap(blob, ctx, retired)


def test_rewrap_with_wrong_context_fails(ring: KeyRing, ctx: KeyContext) -> None:
    blob = encrypt(fake_provider_key(), ctx, ring)
    with pytest.raises(CredentialUnavailable):
        rewrap(blob, dataclasses.replace(ctx, org_id="other"), with_new_version(ring))


# --- property 6: fail closed -----------------------------------------------------------------


def test_keyring_basics(ring: KeyRing) -> None:
    ring3 = with_new_version(with_new_version(ring))
    assert sorted(ring3.keys) == [1, 2, 3]
    assert ring3.primary_version == 3
    assert parse_keyring(format_keyring(ring3)) == ring3
    with pytest.raises(MissingKeyVersion) as excinfo:
        ring3.key(4)
    assert excinfo.value.version == 4


@pytest.mark.parametrize("keys", [{}, {0: bytes(32)}, {-1: bytes(32)}, {1: bytes(31)}, {1: bytes(33)}])
def test_keyring_rejects_bad_keys(keys: dict[int, bytes]) -> None:
    with pytest.raises(InvalidKeyRing):
        KeyRing(keys)


def test_parse_keyring_tolerates_whitespace_and_missing_padding() -> None:
    k1, k2 = generate_key(), generate_key()
    parsed = parse_keyring(f"\n  1:{b64(k1)} ,\n 2:{b64(k2).rstrip('=')}\n")
    assert parsed.keys == {1: k1, 2: k2}


def _bad_keyrings() -> dict[str, tuple[str, list[str]]]:
    """name -> (text, the secret-looking parts that must not appear in the error)."""
    good, other = b64(generate_key()), b64(generate_key())
    short, long = b64(secrets.token_bytes(31)), b64(secrets.token_bytes(33))
    return {
        "empty": ("", []),
        "blank": (" \n\t ", []),
        "empty entry": (f"1:{good},", [good]),
        "no version": (good, [good]),
        "bad base64": (f"1:{good[:-3]}$$!=", [good[:-3]]),
        "space inside key": (f"1:{good[:20]} {good[20:]}", [good[:20], good[20:]]),
        "too short": (f"1:{short}", [short]),
        "too long": (f"1:{long}", [long]),
        "duplicate": (f"1:{good},1:{other}", [good, other]),
        "zero version": (f"0:{good}", [good]),
        "negative version": (f"-1:{good}", [good]),
        "non-numeric version": (f"v1:{good}", [good]),
        "missing key": ("1:", []),
    }


@pytest.mark.parametrize("name", list(_bad_keyrings()))
def test_parse_keyring_rejects(name: str) -> None:
    text, secrets_in_text = _bad_keyrings()[name]
    with pytest.raises(InvalidKeyRing) as excinfo:
        parse_keyring(text)
    message = str(excinfo.value) + repr(excinfo.value)
    assert message.strip()
    for secret in secrets_in_text:
        assert secret not in message


def test_missing_key_file_without_create_raises(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.keys"
    with pytest.raises(InvalidKeyRing):
        load_or_create_key_file(path, allow_create=False)
    assert not path.exists()


def test_key_file_created_with_mode_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.keys"
    ring, created = load_or_create_key_file(path, allow_create=True)
    assert created
    assert list(ring.keys) == [1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_key_file(path, allow_create=True)
    assert (again, created_again) == (ring, False)


def test_group_readable_key_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    ring, _ = load_or_create_key_file(path, allow_create=True)
    os.chmod(path, 0o640)
    with pytest.raises(InvalidKeyRing) as excinfo:
        load_or_create_key_file(path, allow_create=True)
    for form in key_material_forms(ring):
        assert form not in str(excinfo.value)


def test_corrupt_key_file_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    secret_looking = b64(secrets.token_bytes(31))
    path.write_text(f"1:{secret_looking}\n")
    os.chmod(path, 0o600)
    with pytest.raises(InvalidKeyRing) as excinfo:
        load_or_create_key_file(path, allow_create=True)
    assert secret_looking not in str(excinfo.value)
    assert path.read_text() == f"1:{secret_looking}\n"


def test_write_key_file_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    ring, _ = load_or_create_key_file(path, allow_create=True)
    ring2 = with_new_version(ring)
    write_key_file(path, ring2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path, allow_create=False) == (ring2, False)
    assert [p.name for p in tmp_path.iterdir()] == ["master.keys"]


def test_wrong_kek_fails_check_value_and_decrypt(ring: KeyRing, ctx: KeyContext) -> None:
    check = make_check_value(ring, 1)
    assert verify_check_value(ring, 1, check)

    wrong = KeyRing({1: generate_key()})
    assert not verify_check_value(wrong, 1, check)
    assert not verify_check_value(KeyRing({2: generate_key()}), 1, check)  # version missing
    assert not verify_check_value(ring, 1, check[:-1])
    assert not verify_check_value(ring, 1, b"")

    blob = encrypt(fake_provider_key(), ctx, ring)
    with pytest.raises(CredentialUnavailable):
        decrypt(blob, ctx, wrong)


def test_check_value_is_per_version(ring: KeyRing) -> None:
    ring2 = with_new_version(ring)
    check1, check2 = make_check_value(ring2, 1), make_check_value(ring2, 2)
    assert blob_version(check1) == 1
    assert blob_version(check2) == 2
    assert verify_check_value(ring2, 1, check1)
    assert verify_check_value(ring2, 2, check2)
    assert not verify_check_value(ring2, 1, check2)
    assert not verify_check_value(ring2, 2, check1)
    # A check value is not a credential: it does not decrypt as one.
    with pytest.raises(CredentialUnavailable):
        decrypt(check1, new_context(), ring2)


def test_errors_and_reprs_never_contain_key_material(ring: KeyRing, ctx: KeyContext) -> None:
    plaintext = fake_provider_key()
    blob = encrypt(plaintext, ctx, ring)
    forbidden = [*key_material_forms(ring), plaintext, blob.hex(), repr(blob)]

    texts = [repr(ring), str(ring)]
    for bad_blob, bad_ctx, bad_ring in [
        (blob, dataclasses.replace(ctx, provider="openai"), ring),
        (blob[:-1], ctx, ring),
        (blob, ctx, KeyRing({1: generate_key()})),
        (blob, ctx, KeyRing({2: generate_key()})),
    ]:
        with pytest.raises(CredentialUnavailable) as excinfo:
            decrypt(bad_blob, bad_ctx, bad_ring)
        assert str(excinfo.value) == "this key needs to be re-added"
        texts += [str(excinfo.value), repr(excinfo.value)]
        cause = excinfo.value.__cause__
        if cause is not None:
            texts += [str(cause), repr(cause)]
    joined = "\n".join(texts)
    for form in forbidden:
        assert form not in joined


# --- property 7: the mask is bounded --------------------------------------------------------------


def test_mask_examples() -> None:
    assert mask_key("  sk-ant-api03-0123456789abcdefAbCd \n") == "sk-ant-…AbCd"
    assert mask_key("short-key-123") == "sho…"
    assert mask_key("") == "…"


@given(st.text(alphabet=string.printable, max_size=200))
def test_mask_reveals_bounded_characters(key: str) -> None:
    stripped = key.strip()
    mask = mask_key(key)
    revealed = sum(1 for char in mask if char != "…")
    assert mask.count("…") == 1
    assert revealed <= 11
    if len(stripped) < 20:
        assert revealed <= 3
        assert mask == stripped[:3] + "…"
    else:
        middle = stripped[7:-4]
        assert middle not in mask
        assert mask.startswith(stripped[:7])
        assert mask.endswith(stripped[-4:])
