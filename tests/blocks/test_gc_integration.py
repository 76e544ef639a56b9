"""Garbage collection (`raftbox.gc`) with an injected clock: what it deletes, what it
keeps, an interrupted run, and an upload that dedups against a block being deleted."""

from __future__ import annotations

import pytest

from raftbox.blocks import CDC, CachingStore, LRUCache, MemoryStore
from raftbox.blocks.cache import GenerationKeyedCache
from raftbox.blocks.chunker import chunk_bytes
from raftbox.blocks.native import encode_frames
from raftbox.gc import GcConfig
from raftbox.meta import commands as C

from .helpers import MiB, rand_bytes, run
from .inproc import Raftbox

DAY = 24 * 3600.0
GRACE = 600.0
PRUNE = {"revisions_keep": 1, "revisions_keep_ms": 0}  # an overwrite drops the old revision


def cfg(**kw) -> GcConfig:
    return GcConfig(grace_s=GRACE, present_ttl_s=60, upload_keep_s=7 * DAY, interval_s=0, **kw)


def ids(data: bytes) -> list[str]:
    return [c.id for c in chunk_bytes(data, CDC)]


async def has_all(store, block_ids) -> bool:
    return all([await store.has(b) for b in block_ids])


async def has_none(store, block_ids) -> bool:
    return not any([await store.has(b) for b in block_ids])


def test_unreferenced_block_is_deleted_after_the_grace_period(tmp_path) -> None:
    old, new = rand_bytes(3 * MiB, seed=1), rand_bytes(2 * MiB, seed=2)

    async def main():
        async with Raftbox(tmp_path, gc=cfg(), meta_kw=PRUNE) as rb:
            ns, tok = await rb.account("a@x.org")
            await rb.upload(tok, "/f.bin", old)
            await rb.upload(tok, "/f.bin", new)  # the old revision is pruned: its blocks are not
            rb.clock.advance(8 * DAY)  # past the time an upload may still be committed
            r = await rb.gc.run()
            assert r.candidates == len(ids(old)) and r.deleted == 0  # first seen now
            rb.clock.advance(GRACE - 1)
            assert (await rb.gc.run()).deleted == 0
            assert await has_all(rb.store, ids(old))
            rb.clock.advance(2)
            r = await rb.gc.run()
            assert r.deleted == len(ids(old)) and sorted(r.deleted_ids) == sorted(ids(old))
            assert await has_none(rb.store, ids(old))
            assert await has_all(rb.store, ids(new))
            assert await rb.download(tok, "/f.bin") == new
            # the namespace's right to the deleted blocks went with them
            assert rb.metastore.ns_has_blocks(ns, ids(old)) == set()
            entry = {"path": "/again.bin", "blocks": [[c.id, c.size] for c in chunk_bytes(old)]}
            st, res = await rb.rpc("raftbox/commit_batch", tok, {"entries": [entry]})
            assert res["entries"][0][".tag"] == "need_blocks"
            # a later run finds nothing more to do
            rb.clock.advance(GRACE + 1)
            assert (await rb.gc.run()).deleted == 0

    run(main)


def test_referenced_and_recently_uploaded_blocks_are_kept(tmp_path) -> None:
    """Kept: blocks of kept revisions (of deleted files too), blocks uploaded by blocks/put and
    not committed yet, pieces of a live upload session, blocks of a pruned revision uploaded
    recently — until the upload window (7 days) is over."""
    live, deleted, pruned = (rand_bytes(MiB + k, seed=10 + k) for k in range(3))
    put_only, piece = rand_bytes(700_000, seed=20), rand_bytes(900_000, seed=21)

    async def main():
        async with Raftbox(tmp_path, gc=cfg(), meta_kw=PRUNE) as rb:
            ns, tok = await rb.account("a@x.org")
            await rb.upload(tok, "/live.bin", live)
            await rb.upload(tok, "/deleted.bin", deleted)
            assert (await rb.rpc("files/delete_v2", tok, {"path": "/deleted.bin"}))[0] == 200
            await rb.upload(tok, "/p.bin", pruned)
            await rb.upload(tok, "/p.bin", live)
            blocks = chunk_bytes(put_only, CDC)
            assert (await rb.put_blocks(tok, encode_frames((c.id, c.data) for c in blocks)))[
                0
            ] == 200
            st, res, _ = await rb.content("files/upload_session/start", tok, {}, piece)
            assert st == 200
            kept = ids(live) + ids(deleted) + ids(pruned) + ids(put_only) + ids(piece)
            rb.clock.advance(3600)
            await rb.gc.run()
            rb.clock.advance(GRACE + 1)
            r = await rb.gc.run()
            assert r.deleted == 0 and await has_all(rb.store, kept)
            # eight days on: the upload window and the session are over, revisions are not
            rb.clock.advance(8 * DAY)
            await rb.gc.run()
            rb.clock.advance(GRACE + 1)
            r = await rb.gc.run()
            gone = ids(pruned) + ids(put_only) + ids(piece)
            assert sorted(r.deleted_ids) == sorted(set(gone))
            assert await has_all(rb.store, ids(live) + ids(deleted))
            restored = await rb.rpc("files/list_revisions", tok, {"path": "/deleted.bin"})
            rev = restored[1]["entries"][0]["rev"]
            assert (await rb.rpc("files/restore", tok, {"path": "/deleted.bin", "rev": rev}))[
                0
            ] == 200
            assert await rb.download(tok, "/deleted.bin") == deleted

    run(main)


class Interrupt(Exception):
    pass


def test_an_interrupted_run_is_finished_by_the_next(tmp_path) -> None:
    """A run killed after condemning a batch and deleting part of it: the rest stays condemned
    (an upload of those blocks is refused with 503, nothing half-done is committed), and the
    next run finishes the deletions; the blocks can then be uploaded again."""
    old = rand_bytes(3 * MiB, seed=30)

    async def main():
        async with Raftbox(tmp_path, gc=cfg(), meta_kw=PRUNE) as rb:
            _, tok = await rb.account("a@x.org")
            await rb.upload(tok, "/f.bin", old)
            await rb.upload(tok, "/f.bin", b"small")
            doomed = ids(old)
            assert len(doomed) >= 3
            rb.clock.advance(8 * DAY)

            def stop_at(phase_name: str, nth: int = 1):
                seen = [0]

                def hook(phase: str) -> None:
                    if phase == phase_name:
                        seen[0] += 1
                        if seen[0] == nth:
                            raise Interrupt(phase)

                return hook

            rb.gc.on_phase = stop_at("listed")  # killed before it decided anything
            with pytest.raises(Interrupt):
                await rb.gc.run()
            rb.gc.on_phase = lambda phase: None
            await rb.gc.run()
            rb.clock.advance(GRACE + 1)
            rb.gc.on_phase = stop_at("deleted_one", 2)  # killed in the middle of a batch
            with pytest.raises(Interrupt):
                await rb.gc.run()
            _lease, condemned = rb.metastore.gc_state()
            assert sorted(condemned) == sorted(doomed)  # until released, deleted or not
            assert len([b for b in doomed if not await rb.store.has(b)]) == 2
            st, res, _ = await rb.content("files/upload", tok, {"path": "/again.bin"}, old)
            assert st == 503, (st, res)  # its blocks are being deleted: retry later
            rb.gc.on_phase = lambda phase: None
            r = await rb.gc.run()  # resumes the batch (the refused upload's blocks go too)
            assert r.adopted == r.deleted == len(doomed)
            assert rb.metastore.gc_state() == (None, {})
            assert await has_none(rb.store, doomed)
            writes = rb.store.writes
            await rb.upload(tok, "/again.bin", old)  # the retry stores them afresh
            assert rb.store.writes == writes + len(doomed)
            assert await rb.download(tok, "/again.bin") == old

    run(main)


def test_an_upload_that_dedups_against_a_block_being_deleted_is_retried(tmp_path) -> None:
    """The race GC must not lose: a blockserver finds a block present (from the store or its
    cache) just before a run deletes it, and records the upload after. The record is refused
    (gc_retry); after the blockserver reads the new GC generation its cache no longer vouches
    for the block, so the retry writes it again."""
    data = rand_bytes(200_000, seed=40)  # one block
    (x,) = ids(data)
    backend = MemoryStore()
    holder: list = []
    cached = CachingStore(
        backend,
        GenerationKeyedCache(LRUCache(1000), lambda: holder[0].mc.believed_gc_generation),
        present_ttl_s=3600,
    )

    async def main():
        async with Raftbox(tmp_path, store=cached, gc_store=backend, gc=cfg(), meta_kw=PRUNE) as rb:
            holder.append(rb)
            ns, tok = await rb.account("a@x.org")
            await rb.upload(tok, "/f.bin", data)
            await rb.upload(tok, "/f.bin", b"other")
            rb.clock.advance(8 * DAY)
            await rb.gc.run()
            rb.clock.advance(GRACE + 1)
            # a blockserver starts a request: reads the generation, stores the block (present)
            g = await rb.mc.gc_generation(fresh=True)
            assert await cached.put(x, data) is False
            # while a run has the block condemned, recording it is refused
            seen: list = []

            async def record(gen):
                return await rb.mc.write(C.RecordUpload(ns, [C.BlockRef(x, len(data))], gen))

            def during(phase: str) -> None:
                if phase == "condemned":
                    seen.append(phase)

            rb.gc.on_phase = during
            r = await rb.gc.run()
            assert x in r.deleted_ids and not await backend.has(x)
            # recorded after the deletion, with the generation read before it: refused
            res = await record(g)
            assert isinstance(res, C.MetaError) and res.tags == ["gc_retry"], res
            # the cache still says "present" under the old generation, not under the new one
            assert await cached.has(x) is True
            g2 = await rb.mc.gc_generation(fresh=True)
            assert g2 > g
            writes = backend.writes
            assert await cached.put(x, data) is True and backend.writes == writes + 1
            assert await record(g2) is None
            assert await rb.download(tok, "/f.bin") == b"other"

    run(main)


def test_condemned_blocks_cannot_be_recorded(tmp_path) -> None:
    data = rand_bytes(400_000, seed=50)

    async def main():
        async with Raftbox(tmp_path, gc=cfg(), meta_kw=PRUNE) as rb:
            ns, tok = await rb.account("a@x.org")
            await rb.upload(tok, "/f.bin", data)
            await rb.upload(tok, "/f.bin", b"x")
            rb.clock.advance(8 * DAY)
            await rb.gc.run()
            rb.clock.advance(GRACE + 1)
            answers = []

            async def probe() -> None:
                g = await rb.mc.gc_generation(fresh=True)
                refs = [C.BlockRef(c.id, c.size) for c in chunk_bytes(data, CDC)]
                answers.append(await rb.mc.write(C.RecordUpload(ns, refs, g)))

            tasks = []

            def during(phase: str) -> None:
                if phase == "condemned":
                    import asyncio

                    tasks.append(asyncio.ensure_future(probe()))

            rb.gc.on_phase = during
            await rb.gc.run()
            await tasks[0]
            (a,) = answers
            assert isinstance(a, C.MetaError) and a.tags == ["gc_retry"]

    run(main)
