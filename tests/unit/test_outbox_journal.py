"""The metering outbox's journal (storage/outbox.py): lines, segments, locks. Files only, no database.

What recovery replays is checked against a real database and a real server killed with SIGKILL in
tests/integration/test_outbox.py; here: a CallRecord round-trips through a journal line exactly, a
process's segments are written, rolled and deleted as its calls commit, a failed call stays, a torn
line is skipped, and a live owner's files are never claimed while a dead owner's are, once.
"""

import fcntl
import os
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alumia.config import Settings
from alumia.domain.call_record import Api, CallRecord
from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage
from alumia.storage.outbox import Outbox, claim_dead, decode_call, encode_call

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
WHEN = datetime(2026, 11, 28, 9, 15, 42, 123456, tzinfo=UTC)


def a_call(n: int = 0, **changes: object) -> CallRecord:
    """A platform call with every optional field set."""
    call = CallRecord(
        request_id=f"req_{n:024x}", org_id="org-1", api_key_id="key-1", api_key_last_used_at=WHEN,
        agent_id="agent-1", hold_id=f"req_{n:024x}", model="gpt-5.6-luna", provider="openai",
        route=Route.PLATFORM, byok_key_id="byok-1", byok_last_used_at=WHEN - timedelta(days=2),
        stream=True, usage=TokenUsage(1, 2, 3, 4, 5), usage_estimated=True, cost_microcents=123_456,
        fee_microcents=6_790, charged_microcents=130_246, status="upstream_cut", http_status=200,
        error_code="X", latency_ms=812, created_at=WHEN, auto_topup_threshold_cents=500, api=Api.RESPONSES)
    return replace(call, **changes)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_a_call_round_trips_exactly_with_every_field_set() -> None:
    call = a_call()
    assert all(getattr(call, f.name) is not None for f in fields(CallRecord))
    back = decode_call(encode_call(call))
    assert back == call
    assert back.created_at.tzinfo is not None and back.created_at.utcoffset() == timedelta(0)
    assert type(back.route) is Route and type(back.usage) is TokenUsage and type(back.api) is Api
    assert encode_call(call).endswith(b"\n") and encode_call(call).count(b"\n") == 1


def test_none_naive_and_offset_datetimes_round_trip() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)  # SQLite hands back naive UTC times (lastUsedAt)
    east = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    call = a_call(api_key_last_used_at=naive, byok_last_used_at=None, created_at=east, agent_id=None,
                  hold_id=None, byok_key_id=None, error_code=None, auto_topup_threshold_cents=None)
    back = decode_call(encode_call(call))
    assert back == call
    assert back.api_key_last_used_at == naive and back.api_key_last_used_at.tzinfo is None
    assert back.created_at.utcoffset() == east.utcoffset()


@given(route=st.sampled_from(list(Route)), ints=st.lists(INT64, min_size=9, max_size=9),
       micros=st.integers(0, 999_999), text=st.text(max_size=40), flag=st.booleans())
def test_any_record_round_trips(route: Route, ints: list[int], micros: int, text: str, flag: bool) -> None:
    call = a_call(route=route, usage=TokenUsage(*ints[:5]), cost_microcents=ints[5], fee_microcents=ints[6],
                  charged_microcents=ints[7], latency_ms=ints[8], model=text, stream=flag,
                  usage_estimated=not flag, created_at=WHEN.replace(microsecond=micros))
    assert decode_call(encode_call(call)) == call


def test_a_line_that_is_not_an_outbox_line_is_refused() -> None:
    for bad in (b'{"v": 2, "call": {}}', b"[1]", b'{"v": 1, "call": {"request_id": "x"', b"\x00garbage"):
        with pytest.raises((ValueError, TypeError, KeyError)):
            decode_call(bad)


def test_each_call_is_one_line_appended_before_it_commits(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    try:
        assert box.lock_path.exists() and box.lock_path.name == f"{box.owner}.lock"
        entries = [box.append(a_call(n)) for n in range(3)]
        [segment] = box.segment_paths()
        assert segment.name == f"{box.owner}.0.jsonl"
        assert [decode_call(line) for line in lines(segment)] == [a_call(n) for n in range(3)]
        assert box.pending_count() == 3
        for entry in entries:
            assert entry is not None
            box.committed(entry)
        assert box.pending_count() == 0
        # A young, fully committed segment is kept (no file churn per call) until it is idle.
        assert box.segment_paths() == [segment] and segment.exists()
    finally:
        box.close()
    assert list(tmp_path.iterdir()) == []  # nothing pending: a clean shutdown leaves no file


def test_segments_roll_and_are_deleted_once_every_call_in_them_committed(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path, segment_records=3)
    entries = [box.append(a_call(n)) for n in range(7)]
    assert all(e is not None for e in entries)
    assert [p.name for p in box.segment_paths()] == [f"{box.owner}.{s}.jsonl" for s in (0, 1, 2)]
    assert [len(lines(p)) for p in box.segment_paths()] == [3, 3, 1]
    # Segment 0 stays while one of its calls is pending, whatever happens to the others.
    for entry in entries[:2] + entries[3:6]:
        box.committed(entry)  # type: ignore[arg-type]
    assert [p.name for p in box.segment_paths()] == [f"{box.owner}.{s}.jsonl" for s in (0, 2)]
    box.committed(entries[2])  # type: ignore[arg-type]
    assert [p.name for p in box.segment_paths()] == [f"{box.owner}.2.jsonl"]
    box.committed(entries[2])  # type: ignore[arg-type]  # twice is harmless
    box.committed(entries[6])  # type: ignore[arg-type]
    box.close()
    assert list(tmp_path.iterdir()) == []


def test_an_idle_committed_segment_is_deleted_and_the_next_call_opens_a_new_one(tmp_path: Path) -> None:
    now = [1000.0]
    box = Outbox.open(tmp_path, idle_seconds=60, clock=lambda: now[0])
    first = box.append(a_call(1))
    assert first is not None
    box.committed(first)
    box.maintain()
    assert len(box.segment_paths()) == 1  # young: kept
    now[0] += 61
    box.maintain()
    assert box.segment_paths() == [] and sorted(tmp_path.iterdir()) == [box.lock_path]
    second = box.append(a_call(2))
    assert [p.name for p in box.segment_paths()] == [f"{box.owner}.1.jsonl"]
    now[0] += 61
    box.committed(second)  # type: ignore[arg-type]  # committing the last call of an old segment drops it
    assert box.segment_paths() == []
    box.close()


def test_a_failed_call_stays_journaled_until_it_commits(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path, segment_records=1)
    ok, bad = box.append(a_call(1)), box.append(a_call(2))
    assert ok is not None and bad is not None
    box.committed(ok)
    box.failed(bad)
    assert [e.call for e in box.failed_entries()] == [a_call(2)]
    assert [p.name for p in box.segment_paths()] == [f"{box.owner}.1.jsonl"]
    box.committed(bad)  # the sweeper's retry wrote it
    assert box.failed_entries() == [] and box.segment_paths() == []
    box.close()


def test_a_live_owners_files_are_never_claimed(tmp_path: Path) -> None:
    live = Outbox.open(tmp_path)
    try:
        live.append(a_call(1))
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        assert list(claim_dead(tmp_path)) == []
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
        # Another process would hold its own descriptor; so does this second open, and flock refuses it.
        fd = os.open(live.lock_path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        live.close()


def test_a_dead_owners_journal_is_claimed_once_and_then_removed(tmp_path: Path) -> None:
    dead = Outbox.open(tmp_path, segment_records=2)
    entries = [dead.append(a_call(n)) for n in range(5)]
    dead.committed(entries[0])  # type: ignore[arg-type]
    dead.close()  # pending calls: the files stay, the lock is released (as when the process dies)
    assert {p.name for p in tmp_path.iterdir()} == {f"{dead.owner}.lock",
                                                    *(f"{dead.owner}.{s}.jsonl" for s in range(3))}
    live = Outbox.open(tmp_path)
    try:
        claimed = 0
        for journal in claim_dead(tmp_path, skip_owner=live.owner):
            claimed += 1
            assert journal.owner == dead.owner
            # The journal is ours while we replay it: a second recoverer sees it as taken.
            assert list(claim_dead(tmp_path, skip_owner=live.owner)) == []
            assert journal.calls() == [a_call(n) for n in range(5)]  # replay skips committed ones
            journal.remove()
        assert claimed == 1
        assert sorted(tmp_path.iterdir()) == [live.lock_path]
        assert list(claim_dead(tmp_path, skip_owner=live.owner)) == []
    finally:
        live.close()


def test_a_torn_last_line_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    dead = Outbox.open(tmp_path)
    dead.append(a_call(1))
    dead.append(a_call(2))
    [segment] = dead.segment_paths()
    dead.close()
    whole = encode_call(a_call(3))
    with segment.open("ab") as f:
        f.write(whole[: len(whole) // 2])  # the process died inside a write
    [journal] = list(claim_dead(tmp_path))
    assert journal.calls() == [a_call(1), a_call(2)]


def test_a_failed_write_does_not_stop_metering_and_does_not_tear_the_next_line(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path)
    assert box.append(a_call(1)) is not None
    current = box._current
    assert current is not None and current.fd is not None
    os.close(current.fd)  # make the next write fail (EBADF), as a full disk would
    current.fd = os.open(os.devnull, os.O_RDONLY)
    assert box.append(a_call(2)) is None  # logged; metering goes ahead unprotected
    third = box.append(a_call(3))
    assert third is not None and third.segment is not current
    calls = [decode_call(line) for p in box.segment_paths() for line in lines(p)]
    assert calls == [a_call(1), a_call(3)]
    box.close()


def test_orphan_lock_files_of_starting_processes_are_not_looked_at(tmp_path: Path) -> None:
    # A lock file is created as .<owner>.lock.tmp, flocked, then renamed; recovery ignores the temp name.
    (tmp_path / ".abc.lock.tmp").write_bytes(b"")
    assert list(claim_dead(tmp_path)) == []
    assert list(claim_dead(tmp_path / "missing")) == []


def test_each_database_has_its_own_outbox_directory(tmp_path: Path) -> None:
    def outbox_dir(url: str = "") -> Path:
        env = {"ALUMIA_DATA_DIR": str(tmp_path)} | ({"ALUMIA_DATABASE_URL": url} if url else {})
        return Settings.from_env(env).outbox_dir

    default = outbox_dir()
    assert default.parent == tmp_path / "outbox"
    assert outbox_dir(f"sqlite+aiosqlite:///{tmp_path / 'alumia.db'}") == default  # the same file
    assert outbox_dir(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}") != default
    pg = outbox_dir("postgresql+asyncpg://app:one@127.0.0.1:5432/alumia")
    assert pg == outbox_dir("postgresql+asyncpg://app:two@127.0.0.1:5432/alumia")  # password left out
    assert "one" not in pg.name and pg != outbox_dir("postgresql+asyncpg://app:one@127.0.0.1:5432/other")


def test_a_line_journaled_before_the_api_was_recorded_reads_as_unknown() -> None:
    line = encode_call(a_call()).replace(b',"api":"responses"', b"")
    assert b'"api"' not in line
    assert decode_call(line).api is Api.UNKNOWN
