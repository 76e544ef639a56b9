"""The frames of the notification links, as typed values shared by both ends.

Two WebSocket protocols of JSON text frames, each a tagged union on `"op"` (see `feed.py` and
`service.py` for what each frame means and when it is sent):

- the **change feed** of a meta member (`GET /2/raftbox/internal/changes`): member → root
  `FeedDown` (`hello`, `ev`, `hb`, `info`, `resync`), root → member `FeedUp` (`sub`, `unsub`);
- the **push stream** of a notify process (`GET /2/raftbox/notify/stream`): server → client or
  leaf `StreamDown` (`hello`, `watching`, `reset`, `backoff`, `info`, `ev`, `resync`), client or
  leaf → server `StreamUp` (`watch`; `sub`, `unsub` for cluster peers).

Contract: `encode(frame)` gives the text to send; `decode_*(text)` gives a frame or raises
`BadFrame` — whatever the bytes (wrong JSON, unknown op, a missing field, a wrong type). A
receiver treats `BadFrame` as a protocol error by the other end: it logs it and drops that
connection (a link then reconnects with back-off); nothing else is ever raised by a bad frame.
Unknown fields are ignored, so either end can add an optional field without breaking the other.

Why: frames used to be `json.loads` dicts read with `frame["ev"]`, so a malformed frame raised a
`KeyError` wherever it was first touched; every other message of the project is a msgspec
Struct validated when decoded (STYLE.md rule 4).
"""

from __future__ import annotations

from typing import Union

import msgspec


class BadFrame(Exception):
    """The other end sent a frame this end cannot read: its fault; drop the connection."""


class _Frame(msgspec.Struct, frozen=True, tag_field="op", omit_defaults=True):
    pass


class Hello(_Frame, tag="hello"):
    """First frame down. `secret` (base64) for admin-token holders only; `index`: the change
    feed's raft index it starts after (feed only)."""

    secret: str | None = None
    index: int | None = None


class Ev(_Frame, tag="ev"):
    """New positions; on the feed, the last frame of a batch carries the raft `index`."""

    ev: list[tuple[int, int]]
    index: int | None = None


class Hb(_Frame, tag="hb"):
    """Feed heartbeat between batches: the index so far, and whether the member has a leader."""

    index: int
    leader: bool = True


class Info(_Frame, tag="info"):
    """Owner and position of asked namespaces (`[ns, None, -2]`: it does not exist)."""

    ns: list[tuple[int, str | None, int]]


class Resync(_Frame, tag="resync"):
    """The sender lost continuity: re-read every namespace."""


class Watching(_Frame, tag="watching"):
    cursor: int
    ns: int


class Reset(_Frame, tag="reset"):
    cursor: int


class BackoffAnswer(_Frame, tag="backoff"):
    """The server cannot take this cursor now: try again in `backoff` seconds."""

    cursor: int
    backoff: int


class WatchCursor(msgspec.Struct, frozen=True, omit_defaults=True):
    cursor: str
    position: int | None = None  # the newest position seen (default: the cursor's)


class Watch(_Frame, tag="watch"):
    cursors: list[WatchCursor]


class Sub(_Frame, tag="sub"):
    ns: list[tuple[int, int]]  # (namespace, position seen)


class Unsub(_Frame, tag="unsub"):
    ns: list[int]


FeedDown = Union[Hello, Ev, Hb, Info, Resync]  # noqa: UP007 (a runtime value for msgspec)
FeedUp = Union[Sub, Unsub]  # noqa: UP007
StreamDown = Union[Hello, Watching, Reset, BackoffAnswer, Info, Ev, Resync]  # noqa: UP007
StreamUp = Union[Watch, Sub, Unsub]  # noqa: UP007

_encoder = msgspec.json.Encoder()
_decoders = {
    t: msgspec.json.Decoder(t)  # type: ignore[call-overload]
    for t in (FeedDown, FeedUp, StreamDown, StreamUp)
}


def encode(frame: _Frame) -> str:
    return _encoder.encode(frame).decode()


def _decode(t, data: str | bytes):
    try:
        return _decoders[t].decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as e:
        raise BadFrame(str(e)[:200]) from None


def decode_feed_down(data: str | bytes) -> Hello | Ev | Hb | Info | Resync:
    return _decode(FeedDown, data)


def decode_feed_up(data: str | bytes) -> Sub | Unsub:
    return _decode(FeedUp, data)


def decode_stream_down(
    data: str | bytes,
) -> Hello | Watching | Reset | BackoffAnswer | Info | Ev | Resync:
    return _decode(StreamDown, data)


def decode_stream_up(data: str | bytes) -> Watch | Sub | Unsub:
    return _decode(StreamUp, data)


__all__ = [
    "BackoffAnswer",
    "BadFrame",
    "Ev",
    "FeedDown",
    "FeedUp",
    "Hb",
    "Hello",
    "Info",
    "Reset",
    "Resync",
    "StreamDown",
    "StreamUp",
    "Sub",
    "Unsub",
    "Watch",
    "WatchCursor",
    "Watching",
    "decode_feed_down",
    "decode_feed_up",
    "decode_stream_down",
    "decode_stream_up",
    "encode",
]
