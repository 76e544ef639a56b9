"""The block layer inside the server: chunking as a cluster setting, content_hash in the same pass,
dedup that leaks nothing (the Dropship guard), the native block protocol, and upload sessions.
Each test runs one raftbox in its own event loop (`inproc.Raftbox`)."""

from __future__ import annotations

import hashlib
import json

from raftbox.blocks import CDC, FIXED, MemoryStore
from raftbox.blocks.chunker import chunk_bytes
from raftbox.blocks.native import encode_frames, frame_header

from .helpers import MiB, dropbox_content_hash, rand_bytes, run
from .inproc import Raftbox, bid


def _sizes(meta_store, ns: int, path: str) -> list[int]:
    r = meta_store.file_blocks(ns, path)
    return [b.size for b in r[1]]


# -- chunking ---------------------------------------------------------------------------------


def test_upload_is_cut_by_cdc_and_hashed_in_one_pass(tmp_path) -> None:
    """files/upload under the default (CDC) setting: blocks between 256 KiB and 4 MiB cut where
    FastCDC cuts the whole file, the Dropbox content_hash right, the bytes back intact."""
    data = rand_bytes(9 * MiB + 12345, seed=1)

    async def main():
        async with Raftbox(tmp_path) as rb:
            ns, tok = await rb.account("a@x.org")
            meta = await rb.upload(tok, "/f.bin", data)
            assert meta["content_hash"] == dropbox_content_hash(data)
            sizes = _sizes(rb.metastore, ns, "/f.bin")
            assert sizes == [c.size for c in chunk_bytes(data, CDC)]
            assert len(sizes) > 3 and all(s <= 4 * MiB for s in sizes)
            assert await rb.download(tok, "/f.bin") == data

    run(main)


def test_fixed_chunking_setting_and_blocks_stay_valid_across_settings(tmp_path) -> None:
    """--chunking fixed cuts 4 MiB blocks; a store filled under one setting serves a server
    running under the other (a block is its bytes and its id)."""
    data = rand_bytes(9 * MiB, seed=2)
    store = MemoryStore()

    async def main():
        async with Raftbox(tmp_path / "a", store=store, chunking=FIXED) as rb:
            ns, tok = await rb.account("a@x.org")
            meta = await rb.upload(tok, "/f.bin", data)
            assert _sizes(rb.metastore, ns, "/f.bin") == [4 * MiB, 4 * MiB, 1 * MiB]
            assert meta["content_hash"] == dropbox_content_hash(data)
        async with Raftbox(tmp_path / "b", store=store, chunking=CDC) as rb:
            # the same store under CDC: the old fixed blocks are read back fine
            for b in chunk_bytes(data, FIXED):
                assert await store.get(b.id) == b.data
            ns, tok = await rb.account("b@x.org")
            await rb.upload(tok, "/g.bin", data)
            assert await rb.download(tok, "/g.bin") == data

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run(main)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, block_id: str) -> bytes:
        self.gets += 1
        return await super().get(block_id)


def test_session_content_hash_whatever_the_piece_sizes(tmp_path) -> None:
    """An upload session's content_hash is right for odd piece sizes (re-read) and for 4 MiB
    multiples (from the window digests the pieces carry: no block read back)."""

    async def session(rb, tok, pieces: list[bytes], path: str) -> dict:
        st, res, _ = await rb.content("files/upload_session/start", tok, {}, pieces[0])
        assert st == 200, res
        sid, off = res["session_id"], len(pieces[0])
        for p in pieces[1:]:
            arg = {"cursor": {"session_id": sid, "offset": off}}
            st, res, _ = await rb.content("files/upload_session/append_v2", tok, arg, p)
            assert st == 200, res
            off += len(p)
        arg = {"cursor": {"session_id": sid, "offset": off}, "commit": {"path": path}}
        st, res, _ = await rb.content("files/upload_session/finish", tok, arg, b"")
        assert st == 200, res
        return res

    store = CountingStore()

    async def main():
        async with Raftbox(tmp_path, store=store) as rb:
            _, tok = await rb.account("a@x.org")
            odd = [rand_bytes(n, seed=n) for n in (MiB + 3, 5 * MiB - 1, 7, 300_000)]
            res = await session(rb, tok, odd, "/odd.bin")
            assert res["content_hash"] == dropbox_content_hash(b"".join(odd))
            aligned = [rand_bytes(n, seed=n) for n in (4 * MiB, 8 * MiB, 123)]
            gets = store.gets
            res = await session(rb, tok, aligned, "/aligned.bin")
            assert res["content_hash"] == dropbox_content_hash(b"".join(aligned))
            assert store.gets == gets, "the content_hash came from the pieces' window digests"

    run(main)


# -- dedup without leaks ----------------------------------------------------------------------


def test_same_bytes_from_two_accounts_are_stored_once(tmp_path) -> None:
    data = rand_bytes(6 * MiB, seed=3)

    async def main():
        async with Raftbox(tmp_path) as rb:
            _, ta = await rb.account("a@x.org")
            _, tb = await rb.account("b@x.org")
            await rb.upload(ta, "/a.bin", data)
            writes = rb.store.writes
            await rb.upload(tb, "/b.bin", data)  # through files/upload
            assert rb.store.writes == writes, "a block already stored costs no second write"
            blocks = chunk_bytes(data, CDC)
            st, res = await rb.put_blocks(tb, encode_frames((c.id, c.data) for c in blocks))
            assert (st, res) == (200, {"received": len(blocks)})  # through blocks/put
            assert rb.store.writes == writes
            assert await rb.download(tb, "/b.bin") == data

    run(main)


def test_knowing_a_hash_is_not_enough(tmp_path) -> None:
    """Account B knows the block ids of account A's file (the Dropship attack): B can neither
    download them nor commit a file made of them without uploading the bytes, and every answer
    B gets is the one it would get for a block that exists nowhere."""
    secret = rand_bytes(2 * MiB + 77, seed=4)
    nowhere = rand_bytes(2 * MiB + 77, seed=5)

    async def main():
        async with Raftbox(tmp_path) as rb:
            ns_a, ta = await rb.account("a@x.org")
            _, tb = await rb.account("b@x.org")
            meta_a = await rb.upload(ta, "/secret.bin", secret)
            stolen = [c for c in chunk_bytes(secret, CDC)]
            fake = [c for c in chunk_bytes(nowhere, CDC)]

            def entry(cs, name):
                return {
                    "path": name,
                    "blocks": [[c.id, c.size] for c in cs],
                    "size": sum(c.size for c in cs),
                    "content_hash": dropbox_content_hash(b"".join(c.data for c in cs)),
                }

            def strip(x):  # the answers with the ids taken out
                return json.loads(json.dumps(x).replace(stolen[0].id, "X").replace(fake[0].id, "X"))

            for ids in ([stolen[0].id], [fake[0].id]):
                assert await rb.rpc("raftbox/blocks/has", tb, {"ids": ids}) == (200, {"have": []})
            got = [
                await rb.rpc("raftbox/blocks/get", tb, {"ids": [cs[0].id]}) for cs in (stolen, fake)
            ]
            assert got[0][0] == got[1][0] == 409
            assert strip(got[0][1]) == strip(got[1][1])
            commits = [
                await rb.rpc("raftbox/commit_batch", tb, {"entries": [entry(cs[:1], "/x")]})
                for cs in (stolen, fake)
            ]
            assert commits[0][0] == commits[1][0] == 200
            assert commits[0][1]["entries"][0][".tag"] == "need_blocks"
            assert strip(commits[0][1]) == strip(commits[1][1])
            # without a content_hash the server would read the blocks: it must not, for B
            no_hash = [dict(entry(cs[:1], "/y"), content_hash=None) for cs in (stolen, fake)]
            answers = [await rb.rpc("raftbox/commit_batch", tb, {"entries": [e]}) for e in no_hash]
            assert strip(answers[0]) == strip(answers[1])
            # A's file by A's rev, id or namespace path: not B's
            for path in (f"rev:{meta_a['rev']}", meta_a["id"], f"ns:{ns_a}/secret.bin"):
                st, res, _ = await rb.content("files/download", tb, {"path": path})
                assert st == 409 and "not_found" in json.dumps(res), (path, st, res)
            assert rb.metastore.ns_has_blocks(ns_a, [stolen[0].id]) == {stolen[0].id}
            # once B uploads the bytes itself, the same commit works (and costs no write)
            writes = rb.store.writes
            st, res = await rb.put_blocks(tb, encode_frames((c.id, c.data) for c in stolen))
            assert (st, res) == (200, {"received": len(stolen)})
            assert rb.store.writes == writes
            ok = await rb.rpc("raftbox/commit_batch", tb, {"entries": [entry(stolen, "/mine")]})
            assert ok[1]["entries"][0][".tag"] == "success", ok
            assert await rb.download(tb, "/mine") == secret

    run(main)


# -- the native protocol ----------------------------------------------------------------------


def test_native_has_put_commit_get(tmp_path) -> None:
    files = {f"/d/f{i}.bin": rand_bytes(300_000 + i * 70_000, seed=10 + i) for i in range(5)}

    async def main():
        async with Raftbox(tmp_path) as rb:
            ns, tok = await rb.account("a@x.org")
            st, cfg = await rb.rpc("raftbox/blocks/config", tok)
            assert st == 200 and cfg["chunking"]["mode"] == "cdc"
            chunks = {p: chunk_bytes(d, CDC) for p, d in files.items()}
            ids = [c.id for cs in chunks.values() for c in cs]
            assert await rb.rpc("raftbox/blocks/has", tok, {"ids": ids}) == (200, {"have": []})
            body = encode_frames((c.id, c.data) for cs in chunks.values() for c in cs)
            assert await rb.put_blocks(tok, body) == (200, {"received": len(ids)})
            st, res = await rb.rpc("raftbox/blocks/has", tok, {"ids": ids})
            assert sorted(res["have"]) == sorted(set(ids))
            entries = [
                {
                    "path": p,
                    "blocks": [[c.id, c.size] for c in cs],
                    "size": len(files[p]),
                    **({"content_hash": dropbox_content_hash(files[p])} if i % 2 else {}),
                    "client_modified": "2024-01-02T03:04:05Z",
                }
                for i, (p, cs) in enumerate(chunks.items())
            ]
            entries.append(dict(entries[0], path="/d/f1.bin", mode="add"))  # a conflict
            index = rb.node.status()["commit"]
            st, res = await rb.rpc("raftbox/commit_batch", tok, {"entries": entries})
            assert st == 200, res
            assert rb.node.status()["commit"] == index + 1, "one raft entry for the batch"
            tags = [e[".tag"] for e in res["entries"]]
            assert tags == ["success"] * 5 + ["failure"]
            assert res["entries"][5]["failure"][".tag"] == "path"
            for e, p in zip(res["entries"], files, strict=False):
                assert e["content_hash"] == dropbox_content_hash(files[p])
                assert e["client_modified"] == "2024-01-02T03:04:05Z"
            st, lst = await rb.rpc("raftbox/blocks/list", tok, {"path": "/d/f3.bin"})
            assert st == 200 and lst["metadata"]["size"] == len(files["/d/f3.bin"])
            want = [b for b, _ in lst["blocks"]]
            async with rb.http.post(
                f"{rb.url}/2/raftbox/blocks/get",
                json={"ids": want},
                headers={"Authorization": f"Bearer {tok}"},
            ) as r:
                assert r.status == 200
                raw = await r.read()
            got, k = bytearray(), 0
            while k < len(raw):
                n = int.from_bytes(raw[k : k + 4], "big")
                digest, block = raw[k + 4 : k + 36], raw[k + 36 : k + 36 + n]
                assert hashlib.sha256(block).digest() == digest
                got += block
                k += 36 + n
            assert bytes(got) == files["/d/f3.bin"]
            assert await rb.download(tok, "/d/f3.bin") == files["/d/f3.bin"]

    run(main)


def test_native_put_refuses_bad_frames_and_records_nothing(tmp_path) -> None:
    good = rand_bytes(100_000, seed=20)
    other = rand_bytes(100_000, seed=21)

    async def main():
        async with Raftbox(tmp_path) as rb:
            _, tok = await rb.account("a@x.org")
            lying = frame_header(bid(good), len(other)) + other
            for body in (
                encode_frames([(bid(good), good)]) + lying,  # a block not matching its id
                encode_frames([(bid(good), good)])[:-1],  # cut short
                (5 * MiB).to_bytes(4, "big") + bytes(32),  # over the size limit
            ):
                st, res = await rb.put_blocks(tok, body)
                assert st == 400, (st, res)
            st, res = await rb.rpc("raftbox/blocks/has", tok, {"ids": [bid(good), bid(other)]})
            assert res == {"have": []}, "nothing recorded for a refused request"
            st, res = await rb.rpc("raftbox/blocks/has", tok, {"ids": ["nothex"]})
            assert st == 400

    run(main)


def test_an_edit_sends_only_the_blocks_it_changed(tmp_path) -> None:
    """Insert 100 bytes into the middle of a 16 MiB file stored by the native protocol: the
    re-cut file shares all but one or two blocks with the stored one."""
    data = rand_bytes(16 * MiB, seed=30)
    edited = data[: 7 * MiB] + rand_bytes(100, seed=31) + data[7 * MiB :]

    async def main():
        async with Raftbox(tmp_path) as rb:
            _, tok = await rb.account("a@x.org")
            await rb.upload(tok, "/big.bin", data)
            cs = chunk_bytes(edited, CDC)
            st, res = await rb.rpc("raftbox/blocks/has", tok, {"ids": [c.id for c in cs]})
            missing = [c for c in cs if c.id not in set(res["have"])]
            assert 1 <= len(missing) <= 2
            assert sum(c.size for c in missing) < 9 * MiB
            await rb.put_blocks(tok, encode_frames((c.id, c.data) for c in missing))
            entry = {
                "path": "/big.bin",
                "blocks": [[c.id, c.size] for c in cs],
                "mode": "overwrite",
            }
            st, res = await rb.rpc("raftbox/commit_batch", tok, {"entries": [entry]})
            assert res["entries"][0]["content_hash"] == dropbox_content_hash(edited)
            assert await rb.download(tok, "/big.bin") == edited

    run(main)


# -- the meta client a blockserver uses -------------------------------------------------------


def test_remote_meta_client_fails_over_and_writes_exactly_once(tmp_path) -> None:
    """`RemoteMetaClient` skips a dead meta URL, and a write re-sent with the same (client,
    seq) — as after a timeout on one member and a retry on another — is applied once."""
    import msgspec
    import pytest

    from raftbox.api.metaclient import WRITE_PATH, MetaRefused, RemoteMetaClient
    from raftbox.meta import commands as C

    from .inproc import ADMIN, free_port

    async def main():
        async with Raftbox(tmp_path) as rb:
            ns, tok = await rb.account("a@x.org")
            dead = f"http://127.0.0.1:{free_port()}"
            mc = RemoteMetaClient([dead, rb.url], ADMIN, timeout_s=10)
            mc._i = 0  # the dead one first
            try:
                acct = await mc.auth(tok)
                assert acct is not None and acct.namespace_id == ns and mc.failovers >= 1
                assert await mc.auth("nope") is None
                assert await mc.query("ns_has_blocks", ns, ["0" * 64]) == []
                sid = "pid_upload_session:test"
                assert await mc.write(C.SessionStart(sid, ns)) is None
                piece = rand_bytes(1000, seed=60)
                cmd = C.SessionAppend(sid, ns, 0, [C.BlockRef(bid(piece), 1000)], 1000)
                await rb.store.put(bid(piece), piece)
                body = msgspec.msgpack.encode([mc.client_id, 99, 99, C.encode_command(cmd)])
                first = msgspec.msgpack.decode(await mc._call(WRITE_PATH, body))
                again = msgspec.msgpack.decode(await mc._call(WRITE_PATH, body))
                assert first is None and again is None  # not incorrect_offset: applied once
                st = await mc.query("session", sid)
                assert st.length == 1000 and len(st.pieces) == 1
                r = await mc.query("file_blocks", ns, "/none")
                assert isinstance(r, C.MetaError) and r.tags == ["path", "not_found"]
            finally:
                await mc.aclose()
            bad = RemoteMetaClient([rb.url], "wrong-token", timeout_s=5)
            try:
                with pytest.raises(MetaRefused, match="401"):
                    await bad.query("gc_generation")
            finally:
                await bad.aclose()

    run(main)
