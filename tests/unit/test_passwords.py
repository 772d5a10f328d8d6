"""Password checks on the per-app pool (services/passwords.py)."""

import os
import sys
import threading

import pytest

from alumia.services.passwords import Passwords, hash_password


async def test_a_check_matches_only_the_right_password_and_an_unknown_user_never() -> None:
    passwords = Passwords(concurrency=2)
    try:
        stored = await hash_password("correct horse")
        assert await passwords.verify(stored, "correct horse") is True
        assert await passwords.verify(stored, "wrong horse") is False
        assert await passwords.verify("not-a-hash", "correct horse") is False
        assert await passwords.verify(None, "correct horse") is False  # checked against the dummy hash
    finally:
        passwords.close()


@pytest.mark.skipif(sys.platform != "linux", reason="threads have nice values of their own on Linux only")
async def test_the_hashing_threads_give_way_to_the_event_loop() -> None:
    passwords = Passwords(concurrency=2)
    try:
        await passwords.verify(None, "x")
        workers = [t for t in threading.enumerate() if t.name.startswith("alumia-argon2")]
        niceness = {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in workers if t.native_id}
    finally:
        passwords.close()
    loop_thread = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # untouched
    assert workers and niceness == {min(19, loop_thread + 10)}
