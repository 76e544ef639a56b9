"""`tune_for_blocks`: glibc takes the settings, once, and the processes that move blocks apply
them (a block service, a native client)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from raftbox.blocks import malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


@glibc
def test_glibc_takes_the_settings_and_a_second_call_changes_nothing() -> None:
    assert malloc.tune_for_blocks() is True
    assert malloc.tune_for_blocks() is True


@glibc
@pytest.mark.parametrize(
    "make",
    [
        "from raftbox.blocks import MemoryStore\nfrom raftbox.blocks.service import BlockService\nBlockService(MemoryStore())",
        "from raftbox.blocks.native import NativeClient; import asyncio\n"
        "async def m():\n    await NativeClient('http://127.0.0.1:1', 't').aclose()\n"
        "asyncio.run(m())",
    ],
)
def test_what_moves_blocks_tunes_its_process(make: str) -> None:
    code = f"{make}\nfrom raftbox.blocks import malloc\nprint(malloc._done)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
