"""The metering outbox: a per-process journal of calls about to be metered, replayed after a crash.

Why: a call's usage record, hold settlement and ledger charge commit in one transaction after the
provider has answered. A process killed between the answer and that commit would lose the usage (its
hold would later expire, uncharged). So every call is first appended, as one line of JSON, to a journal
file of the process's own; a live process replays the calls of a dead one (docs/behaviour.md, "Money").

Files, all under one directory per database (`Settings.outbox_dir`,
`<data_dir>/outbox/<digest of the database URL>`), shared by the processes on that database:

- `<owner>.lock`: held with an exclusive `flock` for the owner process's whole life. The kernel drops
  the lock when the process dies, however it dies, so "I can lock it" means "its owner is dead". The
  file is created under a temporary name, locked, and only then renamed into place, so no other
  process ever sees an owner's lock file unlocked while the owner lives.
- `<owner>.<seq>.jsonl`: the owner's journal segments, one call per line.

Durability: each append is one write() on an O_APPEND descriptor, with no fsync. The line is then in
the OS page cache and survives the process being killed (kill -9, OOM, a crash); it does NOT survive a
power loss or a kernel crash, which can still lose the calls whose lines the kernel had not yet written
back (Linux's default writeback delay is up to about 30 s). Measured on these machines
(bench/outbox_append.py): the append costs about 6 µs per call, an fsync per call 0.2 ms on an idle
disk and over 1 ms on a busy one, and it would be paid on every call's hot path.

The journal holds no secrets: a CallRecord carries ids, model names, token counts and microcents,
never a key. The directory must be on a local file system (flock is not reliable over NFS), and a
process can only recover journals it can see: machines that do not share the data dir recover only
their own processes' journals; a lost machine's last calls fall back to the hold sweeper.

Done-ness lives in memory only (a count of pending calls per segment): no "committed" marker is
written. A segment is deleted once every call in it has committed and it is no longer the one being
written; recovery replays every line of a dead owner's segments and skips the calls that already have
a usage record. This object belongs to one event loop and is not thread-safe.
"""

import contextlib
import fcntl
import logging
import os
import socket
import time
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from alumia.domain.call_record import Api, CallRecord
from alumia.domain.routing import Route
from alumia.domain.usage import TokenUsage

log = logging.getLogger("alumia.outbox")

FORMAT_VERSION = 1
# Roll to a new segment after this many calls, so no file grows without bound.
SEGMENT_RECORDS = 1000
# A fully committed segment is deleted once it is this old (checked on commit and by the sweeper):
# deleting it on every commit would cost a file create and unlink per call at low traffic.
SEGMENT_IDLE_SECONDS = 60.0

_LOCK_SUFFIX = ".lock"
_SEGMENT_SUFFIX = ".jsonl"

# --- serialization ----------------------------------------------------------------------------------


def encode_call(call: CallRecord) -> bytes:
    """One journal line (with its newline) for a call: JSON that `decode_call` turns back into it.

    orjson writes the dataclass as it is: datetimes as ISO 8601 with their offset (naive ones without),
    Route as its value, TokenUsage as an object, ints exactly (64-bit).
    """
    return orjson.dumps({"v": FORMAT_VERSION, "call": call}, option=orjson.OPT_APPEND_NEWLINE)


def _decoder(hint: Any) -> Callable[[Any], Any] | None:
    """How to turn a field's JSON value back into its type (None: the JSON value is already it)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        decode = _decoder(inner[0]) if len(inner) == 1 else None
        return (lambda v: None if v is None else decode(v)) if decode else None
    if hint is datetime:
        return datetime.fromisoformat
    if hint is Route:
        return Route
    if hint is Api:
        return Api
    if hint is TokenUsage:
        return lambda v: TokenUsage(**v)
    return None


# Built from CallRecord's own type hints, so a field added there is decoded without a change here
# (tests/unit/test_outbox.py round-trips a record with every field set).
_HINTS = typing.get_type_hints(CallRecord)
_DECODERS = {f.name: _decoder(_HINTS[f.name]) for f in fields(CallRecord)}


def decode_call(line: bytes) -> CallRecord:
    """The call a journal line holds; ValueError (or a KeyError/TypeError) when the line is not one."""
    doc = orjson.loads(line)
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION or not isinstance(doc.get("call"), dict):
        raise ValueError("not an outbox line of format version 1")
    raw = doc["call"]
    values = {}
    for name, decode in _DECODERS.items():
        if name in raw:
            values[name] = decode(raw[name]) if decode else raw[name]
    return CallRecord(**values)


# --- the live process's journal ---------------------------------------------------------------------


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    opened_at: float
    fd: int | None = None
    appended: int = 0
    pending: int = 0


@dataclass(slots=True, eq=False)
class Entry:
    """A journaled call that has not committed yet; `failed` once its metering transaction raised."""

    call: CallRecord
    segment: _Segment
    failed: bool = False


@dataclass(eq=False)
class Outbox:
    """This process's journal: append before the metering transaction, `committed` after it.

    Create it with `Outbox.open(directory)`; `close()` on shutdown.
    """

    directory: Path
    owner: str
    _lock_fd: int
    segment_records: int = SEGMENT_RECORDS
    idle_seconds: float = SEGMENT_IDLE_SECONDS
    _clock: Callable[[], float] = time.monotonic
    _current: _Segment | None = None
    _next_seq: int = 0
    _segments: dict[int, _Segment] = field(default_factory=dict)
    _pending: set[Entry] = field(default_factory=set)

    @classmethod
    def open(cls, directory: Path, *, segment_records: int = SEGMENT_RECORDS,
             idle_seconds: float = SEGMENT_IDLE_SECONDS, clock: Callable[[], float] = time.monotonic
             ) -> "Outbox":
        """Create the directory if needed and take this process's lock file (flocked for its life)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = uuid.uuid4().hex
        final = directory / f"{owner}{_LOCK_SUFFIX}"
        # Created under a name recovery does not look at, locked, then renamed: the lock file appears
        # already locked, so no recoverer can mistake a starting process for a dead one.
        temp = directory / f".{owner}{_LOCK_SUFFIX}.tmp"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # For people reading the directory: which process owns these files.
            os.write(fd, orjson.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            os.rename(temp, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return cls(directory=directory, owner=owner, _lock_fd=fd, segment_records=segment_records,
                   idle_seconds=idle_seconds, _clock=clock)

    @property
    def lock_path(self) -> Path:
        """This process's lock file."""
        return self.directory / f"{self.owner}{_LOCK_SUFFIX}"

    def append(self, call: CallRecord) -> Entry | None:
        """Journal a call about to be metered (one write, no fsync).

        Never raises: if the journal cannot be written (disk full, say), the error is logged and None
        returned; metering then goes ahead unprotected, as it would without an outbox, because the
        transaction matters more than its insurance.
        """
        try:
            line = encode_call(call)
            segment = self._current if self._current is not None else self._open_segment()
            assert segment.fd is not None
            written = os.write(segment.fd, line)
            if written != len(line):
                raise OSError(f"short write to the outbox ({written} of {len(line)} bytes)")
        except Exception:
            log.exception("could not journal call %s; it is metered without crash protection",
                          call.request_id)
            # A torn line must not run into the next one: continue in a fresh segment.
            self._retire_current()
            return None
        segment.appended += 1
        segment.pending += 1
        entry = Entry(call, segment)
        self._pending.add(entry)
        if segment.appended >= self.segment_records:
            self._retire_current()
        return entry

    def committed(self, entry: Entry) -> None:
        """The call's metering transaction committed: it no longer needs its journal line."""
        if entry not in self._pending:
            return
        self._pending.discard(entry)
        segment = entry.segment
        segment.pending -= 1
        if segment.pending == 0 and (segment is not self._current
                                     or self._clock() - segment.opened_at >= self.idle_seconds):
            if segment is self._current:
                self._retire_current()
            else:
                self._delete(segment)

    def failed(self, entry: Entry) -> None:
        """The call's metering transaction raised: the call stays journaled for `retry_failed`."""
        if entry in self._pending:
            entry.failed = True

    def failed_entries(self) -> list[Entry]:
        """Calls whose metering failed in this process and that have not committed since."""
        return [entry for entry in self._pending if entry.failed]

    def pending_count(self) -> int:
        """Calls journaled and not yet committed (in flight or failed)."""
        return len(self._pending)

    def maintain(self) -> None:
        """Delete the segment being written when all its calls committed and it is old (the sweeper)."""
        current = self._current
        if (current is not None and current.pending == 0
                and self._clock() - current.opened_at >= self.idle_seconds):
            self._retire_current()

    def segment_paths(self) -> list[Path]:
        """The segment files this process has on disk, oldest first."""
        return [s.path for s in sorted(self._segments.values(), key=lambda s: s.seq)]

    def close(self) -> None:
        """On shutdown: remove every file when nothing is pending; else leave the files for recovery.

        Closing the lock file releases the flock either way, so a live process (or the next start)
        replays whatever did not commit.
        """
        self._retire_current()
        try:
            if self._pending:
                log.warning("%s call(s) were not metered at shutdown; they stay in %s for recovery",
                            len(self._pending), self.directory)
            else:
                for segment in list(self._segments.values()):
                    self._delete(segment)
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()
        finally:
            os.close(self._lock_fd)

    def _open_segment(self) -> _Segment:
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{self.owner}.{seq}{_SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        segment = _Segment(seq=seq, path=path, opened_at=self._clock(), fd=fd)
        self._segments[seq] = segment
        self._current = segment
        return segment

    def _retire_current(self) -> None:
        """Stop writing the current segment (the next append opens a new one); delete it if done."""
        segment, self._current = self._current, None
        if segment is None:
            return
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None
        if segment.pending == 0:
            self._delete(segment)

    def _delete(self, segment: _Segment) -> None:
        self._segments.pop(segment.seq, None)
        try:
            segment.path.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # the file stays; recovery after this process ends replays it, idempotently
            log.exception("could not delete outbox segment %s", segment.path)


# --- dead owners' journals --------------------------------------------------------------------------


@dataclass
class DeadJournal:
    """A dead owner's journal, locked by this process while it is replayed."""

    owner: str
    directory: Path
    segments: list[Path]

    def calls(self) -> list[CallRecord]:
        """Every call in the segments, oldest first; a torn or unreadable line is logged and skipped.

        A torn line can only be the last one written before a crash or a failed write, and a call
        whose line is torn never got to its metering transaction (the append comes first).
        """
        out: list[CallRecord] = []
        for path in self.segments:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            for number, line in enumerate(data.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    out.append(decode_call(line))
                except (ValueError, KeyError, TypeError):
                    log.warning("skipping an unreadable line %s of %s (a write cut short by a crash)",
                                number, path.name)
        return out

    def remove(self) -> None:
        """Delete the segments, then the lock file (last, so a crash midway leaves it recoverable)."""
        for path in self.segments:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{self.owner}{_LOCK_SUFFIX}").unlink()


def _segments_of(directory: Path, owner: str) -> list[Path]:
    found: list[tuple[int, Path]] = []
    for path in directory.glob(f"{owner}.*{_SEGMENT_SUFFIX}"):
        seq = path.name[len(owner) + 1:-len(_SEGMENT_SUFFIX)]
        if seq.isdigit():
            found.append((int(seq), path))
    return [path for _, path in sorted(found)]


@contextlib.contextmanager
def _locked_if_dead(lock_path: Path) -> Iterator[bool]:
    """Try to take a lock file's flock without waiting: True when its owner is dead (held till exit)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:  # recovered and removed by another process meanwhile
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner lives, or another process is recovering it right now
            yield False
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        # Locked a file another recoverer had already finished with and unlinked: nothing to do.
        yield same
    finally:
        os.close(fd)


def claim_dead(directory: Path, *, skip_owner: str | None = None) -> Iterator[DeadJournal]:
    """Each journal in `directory` whose owner is dead, locked by this process until the next one.

    `skip_owner` is the calling process's own owner id. A live owner's files are never read or
    touched: its lock file cannot be locked.
    """
    if not directory.is_dir():
        return
    owners = sorted(p.name[:-len(_LOCK_SUFFIX)] for p in directory.glob(f"*{_LOCK_SUFFIX}")
                    if not p.name.startswith("."))
    for owner in owners:
        if owner == skip_owner:
            continue
        with _locked_if_dead(directory / f"{owner}{_LOCK_SUFFIX}") as dead:
            if dead:
                yield DeadJournal(owner=owner, directory=directory, segments=_segments_of(directory, owner))
