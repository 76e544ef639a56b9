"""The cluster view's data: what every member, notify process and blockserver is doing now.

Contract
--------
`ClusterView` lives in every meta member. `status(since)` answers, from any member:

- `members`: one row per voter and learner: `id`, `role`, `term`, `leader`, `commit`, `applied`,
  `last_index`, `lag` (entries the leader has that this member has not acknowledged, from the
  leader's progress; else the leader's last index minus this member's applied index), `url`,
  `requests_per_s`, `reachable`. This member knows its own row; it asks every other member over
  the peer port (the `ops_status` RPC, mutual TLS), all at once, each within `peer_timeout_s`: a
  member that does not answer in time is `reachable: false` with its last known row, if any.
- `leader`: the leader most members name (0: none).
- `events`: the Raft record (`raft/record.py`) of every member that answered, merged and sorted
  by time; `since` maps a member id to the last seq the caller has, so a live page asks only for
  what is new (at most `events_max` per member per answer).
- `processes`: the blockservers and notify processes that announced themselves
  (`ops/processes.py`) to any member, merged; and `notify` of this process's own notify root.

`wait_changed(since_seq, wait_s)` is the live feed's long-poll: it returns as soon as this
member's record has an event past `since_seq`, or after `wait_s` (bounded by `wait_max_s`), so a
page learns of an election at once and of everything else within `wait_s`.

Why gather over the peer port and not from the browser: the page talks to one address (the
public port of the member that served it); the members already trust each other there; and a
page cannot learn other members' addresses or credentials.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from .processes import ProcessTable

log = logging.getLogger(__name__)

__all__ = ["ClusterView", "parse_since"]

OPS_RPC = "ops_status"


def parse_since(raw: Any) -> dict[int, int]:
    """`{"1": 5, "2": 7}` or `"1:5,2:7"` into {member: seq}; ValueError on anything else."""
    out: dict[int, int] = {}
    if raw in (None, ""):
        return out
    if isinstance(raw, str):
        items = []
        for part in raw.split(","):
            k, sep, v = part.partition(":")
            if not sep:
                raise ValueError("since: member:seq pairs, comma-separated")
            items.append((k, v))
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        raise ValueError("since: an object of member id to seq")
    if len(items) > 64:
        raise ValueError("since: at most 64 members")
    for k, v in items:
        try:
            mid, seq = int(k), int(v)
        except (TypeError, ValueError):
            raise ValueError("since: member ids and seqs are integers") from None
        if mid <= 0 or seq < 0 or seq > 2**62:
            raise ValueError("since: out of range")
        out[mid] = seq
    return out


class ClusterView:
    def __init__(
        self,
        node: Any,
        url: Callable[[], str],
        rates: Callable[[], dict],
        processes: ProcessTable,
        notify_status: Callable[[], dict | None] = lambda: None,
        peer_timeout_s: float = 1.0,
        events_max: int = 200,
        wait_max_s: float = 10.0,
    ) -> None:
        self.node = node
        self.url = url
        self.rates = rates
        self.processes = processes
        self.notify_status = notify_status
        self.peer_timeout_s = peer_timeout_s
        self.events_max = events_max
        self.wait_max_s = wait_max_s
        self._last_rows: dict[int, dict] = {}
        node.rpc_handlers[OPS_RPC] = self._on_rpc

    # -- this member ---------------------------------------------------------------------------
    def local(self, since: int) -> dict[str, Any]:
        node = self.node
        st = node.status()
        core = node.core.status()
        progress = {
            str(pid): {"match": p.match, "next": p.next, "state": p.state.name.lower()}
            for pid, p in core.progress.items()
        }
        notify = self.notify_status()
        if since > node.record.seq:
            since = 0  # this member restarted (its seqs start again): everything it has
        return {
            "id": st["id"],
            "role": st["role"],
            "term": st["term"],
            "leader": st["leader"],
            "commit": st["commit"],
            "applied": st["applied"],
            "last_index": st["last_index"],
            "voters": st["voters"],
            "learners": st["learners"],
            "progress": progress,
            "url": self.url(),
            "requests_per_s": self.rates(),
            "notify": notify,
            "events": node.record.since(since, self.events_max),
            "seq": node.record.seq,
            "processes": self.processes.snapshot(time.monotonic()),
        }

    async def _on_rpc(self, payload: bytes) -> bytes:
        since = msgspec.msgpack.decode(payload, type=int) if payload else 0
        return msgspec.msgpack.encode(self.local(since))

    # -- the cluster ---------------------------------------------------------------------------
    async def _ask(self, pid: int, since: int) -> dict | None:
        try:
            raw = await asyncio.wait_for(
                self.node.transport.call(
                    pid, OPS_RPC, msgspec.msgpack.encode(since), self.peer_timeout_s
                ),
                self.peer_timeout_s,
            )
            return msgspec.msgpack.decode(raw)
        except Exception as e:  # noqa: BLE001 - any failure means: not reachable now
            log.debug("cluster view: member %d did not answer: %r", pid, e)
            return None

    async def status(self, since: dict[int, int] | None = None) -> dict[str, Any]:
        since = since or {}
        me = self.node.id
        mine = self.local(since.get(me, 0))
        ids = sorted(set(mine["voters"]) | set(mine["learners"]) | {me})
        others = [pid for pid in ids if pid != me]
        answers = await asyncio.gather(*(self._ask(pid, since.get(pid, 0)) for pid in others))
        rows: dict[int, dict] = {me: mine}
        for pid, ans in zip(others, answers, strict=True):
            if ans is not None:
                rows[pid] = ans
        events: list[dict] = []
        processes: dict[str, dict] = {}
        seqs: dict[str, int] = {}
        members = []
        for pid in ids:
            row = rows.get(pid)
            if row is None:
                last = self._last_rows.get(pid, {"id": pid})
                members.append({**last, "reachable": False, "role": "unreachable"})
                continue
            self._last_rows[pid] = {
                k: v for k, v in row.items() if k not in ("events", "processes", "progress")
            }
            events.extend(row.pop("events"))
            for p in row.pop("processes"):
                if p["url"] not in processes or p["state"] == "up":
                    processes[p["url"]] = p
            seqs[str(pid)] = row["seq"]
            members.append({**row, "reachable": True})
        leader = _majority_leader(members)
        _fill_lag(members, leader)
        events.sort(key=lambda e: (e["at_ms"], e["member"], e["seq"]))
        return {
            "served_by": me,
            "leader": leader,
            "members": members,
            "events": events,
            "seqs": seqs,
            "processes": sorted(processes.values(), key=lambda p: (p["kind"], p["url"])),
            "now_ms": int(time.time() * 1000),
        }

    async def wait_changed(self, since_seq: int, wait_s: float) -> None:
        """Until this member's record has an event past `since_seq`, or `wait_s` passed."""
        wait_s = max(0.0, min(wait_s, self.wait_max_s))
        deadline = time.monotonic() + wait_s
        rec = self.node.record
        while True:
            changed = self.node.record_event()  # before the look: no event slips in between
            if rec.seq > since_seq:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                return


def _majority_leader(members: list[dict]) -> int:
    named = Counter(m.get("leader", 0) for m in members if m.get("reachable") and m.get("leader"))
    if not named:
        return 0
    leader, _ = named.most_common(1)[0]
    return leader


def _fill_lag(members: list[dict], leader: int) -> None:
    lead = next((m for m in members if m.get("id") == leader and m.get("reachable")), None)
    for m in members:
        if not m.get("reachable") or lead is None:
            m["lag"] = None
            continue
        prog = lead.get("progress", {}).get(str(m["id"]))
        if prog is not None:
            m["lag"] = max(0, lead["last_index"] - prog["match"])
        else:
            m["lag"] = max(0, lead["last_index"] - m.get("applied", 0))
