"""Notification servers: long-poll, the push stream, and the root/leaf tree (DESIGN.md §7)."""

from .feed import LocalFeed, MetaFeedServer, StreamLink
from .front import Front
from .hub import GONE, UNKNOWN, Hub, HubFull, Wake
from .process import NotifyProcess, NotifyProcessConfig
from .service import NotifyConfig, NotifyService, parse_longpoll

__all__ = [
    "GONE",
    "UNKNOWN",
    "Front",
    "Hub",
    "HubFull",
    "LocalFeed",
    "MetaFeedServer",
    "NotifyConfig",
    "NotifyProcess",
    "NotifyProcessConfig",
    "NotifyService",
    "StreamLink",
    "Wake",
    "parse_longpoll",
]
