"""Who is calling, from memory: each process's cache of call contexts, kept exact by the cache generation.

A context is stored with the generation read before it was (so it is at least that fresh) and served
only to a call whose own generation read (storage/generation.py: a statement that started after the
call began) returns the same value. Any change a context depends on bumps the generation in its own
transaction (migration 0009), so a change whose response returned before a call began is never
hidden from it, on any process. docs/hot-path.md "Who is calling: the context cache" has the whole
argument and its costs.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from alumia.storage.gateway import CallContext
from alumia.storage.generation import GenerationReader, GenerationWatch

# (kind, API key hash or org id, X-Alumia-Agent or None); kind keeps a key's and an org's apart.
CacheKey = tuple[str, str, str | None]
Load = Callable[[], Awaitable[CallContext | None]]
# A read under way: the generation it was started at, and its task.
Loading = tuple[int, asyncio.Future[CallContext | None]]


class ContextCache:
    """A bounded LRU of call contexts, one per process (made in the app's lifespan).

    Only contexts that admit a call can be stored: an unknown or revoked key (no context), or an agent
    header that names no agent, is read from the database every time and never takes a slot, so a
    caller without a valid key cannot fill memory. Concurrent calls that miss on the same key at the
    same generation share one read. `loads` counts the context reads made, `hits` the calls served from
    memory.
    """

    def __init__(self, reader: GenerationReader, max_entries: int) -> None:
        self._reader = reader
        self.watch = GenerationWatch(reader.read)
        self._max = max_entries
        self._entries: OrderedDict[CacheKey, tuple[int, CallContext]] = OrderedDict()
        self._loading: dict[CacheKey, Loading] = {}
        self._newest = 0  # the highest generation seen; a lower one means the database was replaced
        self.loads = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def context(self, key: CacheKey, load: Load) -> CallContext | None:
        """The caller's context as fresh as the database when this call began; `load` reads it.

        Raises GenerationUnavailable when the generation cannot be read, and whatever `load` raises.
        """
        generation = await self.watch.current()
        if generation < self._newest:
            # The counter went back (a restored backup, a re-created database): nothing here can be
            # trusted to match what its generation number now means.
            self._entries.clear()
        self._newest = max(self._newest, generation)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == generation:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        loading = self._loading.get(key)
        if loading is None or loading[0] != generation:
            # Read by a task of its own: a caller that goes away must not cancel the others' read.
            task = asyncio.ensure_future(self._load(key, generation, load))
            loading = self._loading[key] = (generation, task)

            def loaded(_done: asyncio.Future[CallContext | None], mine: Loading = loading) -> None:
                self._loaded(key, mine)

            loading[1].add_done_callback(loaded)
        return await asyncio.shield(loading[1])

    async def _load(self, key: CacheKey, generation: int, load: Load) -> CallContext | None:
        self.loads += 1
        ctx = await load()
        if ctx is not None and _admits(key, ctx):
            self._store(key, generation, ctx)
        return ctx

    def _loaded(self, key: CacheKey, loading: Loading) -> None:
        if self._loading.get(key) is loading:
            del self._loading[key]
        if not loading[1].cancelled():
            loading[1].exception()  # every waiter has been told; do not log it again as never retrieved

    def _store(self, key: CacheKey, generation: int, ctx: CallContext) -> None:
        if self._max <= 0:
            return
        held = self._entries.get(key)
        if held is not None and held[0] > generation:
            return  # a newer read of the same caller finished first: keep it
        self._entries[key] = (generation, ctx)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        """Close the generation reader's connection."""
        await self._reader.close()


def _admits(key: CacheKey, ctx: CallContext) -> bool:
    # A context whose agent header named no agent of the org only ever leads to a 404: not worth a slot,
    # and a key holder could otherwise push others out with made-up agent names.
    return key[2] is None or ctx.agent_id is not None
