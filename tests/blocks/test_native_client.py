"""`NativeClient`'s download pipeline against a tiny in-process server speaking the two routes it
uses (`blocks/list`, `blocks/get`): the file is written in order, every block is checked before
its bytes are written, and a damaged block stops the download with `FrameError` with nothing of
it (or after it) in the file. The server is plain HTTP on 127.0.0.1 and stops with the test."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from raftbox.blocks.native import FrameError, NativeClient, frame_header

from .helpers import bid, rand_bytes

SIZES = [300_000, 1_000_000, 70_000, 5, 2_000_000, 65_536, 400_000, 1, 900_000, 123_457]
BLOCKS = [rand_bytes(n, seed=i) for i, n in enumerate(SIZES)]


async def _serve(damaged: int | None) -> tuple[web.AppRunner, str]:
    by_id = {bid(b): b for b in BLOCKS}

    async def list_blocks(request: web.Request) -> web.Response:
        return web.json_response(
            {"metadata": {"size": sum(SIZES)}, "blocks": [[bid(b), len(b)] for b in BLOCKS]}
        )

    async def get(request: web.Request) -> web.StreamResponse:
        ids = (await request.json())["ids"]
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in ids:
            data = by_id[i]
            if damaged is not None and i == bid(BLOCKS[damaged]):
                data = bytes([data[0] ^ 1]) + data[1:]  # the right id, the wrong bytes
            await resp.write(frame_header(i, len(data)) + data)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/2/raftbox/blocks/list", list_blocks)
    app.router.add_post("/2/raftbox/blocks/get", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _download(tmp_path, damaged: int | None, ahead: int) -> bytes:
    out = tmp_path / "out.bin"

    async def main() -> None:
        runner, url = await _serve(damaged)
        try:
            async with NativeClient(url, "t", download_ahead_blocks=ahead) as nc:
                await nc.download("/f", str(out))
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return out.read_bytes()


@pytest.mark.parametrize("ahead", [1, 2, 8])
def test_download_writes_every_block_in_order(tmp_path, ahead: int) -> None:
    assert _download(tmp_path, None, ahead) == b"".join(BLOCKS)


@pytest.mark.parametrize("damaged", [0, 4, 9])
def test_a_damaged_block_stops_the_download_before_its_bytes_are_written(
    tmp_path, damaged: int
) -> None:
    with pytest.raises(FrameError, match="damaged"):
        _download(tmp_path, damaged, 2)
    assert (tmp_path / "out.bin").read_bytes() == b"".join(BLOCKS[:damaged])


def test_get_refuses_a_damaged_block() -> None:
    async def main() -> list[str]:
        runner, url = await _serve(4)
        got: list[str] = []
        try:
            async with NativeClient(url, "t") as nc:
                async for b, _data in nc.get([bid(b) for b in BLOCKS]):
                    got.append(b)
        finally:
            await runner.cleanup()
        return got

    with pytest.raises(FrameError, match="damaged"):
        asyncio.run(main())
