"""A tiny driver that replays Raft scenario files (etcd-raft's `testdata/*.txt` + `interaction_env`).

A scenario file is a list of commands, each followed by `----` and the output it must produce,
ended by a blank line. Lines starting with `#` are comments. For example:

    add-nodes 3
    ----
    ok

    campaign 1
    ----
    ok

    stabilize
    ----
    1->2 PRE_VOTE t2 i1/t1
    ...

The driver runs every command against a `Harness`, renders the file again with the actual
outputs, and the test compares the two texts. With `RAFTBOX_REWRITE=1` in the environment the
file is rewritten with the actual outputs instead (then read the diff: the transcript is the
claim, and it must show correct Raft behaviour).

Commands (ids are node ids; `[x]` is optional):

    add-nodes N [key=value...]   a fresh cluster 1..N; keys: pre-vote, check-quorum (on/off),
                                 election, heartbeat, chunk, inflight, max-msg, seed
    add-node ID                  a new, empty member (it learns the membership by snapshot)
    campaign ID                  ID starts an election now (nothing is delivered yet)
    propose ID DATA              ID proposes DATA (a follower forwards it)
    tick ID [N]                  N ticks on ID
    tick-heartbeat [ID]          heartbeat_ticks ticks on ID (default: the leader)
    tick-election ID             ticks ID until its (randomized) election timer fires
    process-ready ID...          each ID handles one Ready; prints what it contained
    deliver                      delivers every queued message once
    round [N]                    N times: every node handles its Ready, then `deliver`
    stabilize                    handle Readies and deliver until nothing moves
    messages                     the queued (sent, undelivered) messages
    drop FROM TO [TYPE]          drops queued messages FROM->TO (of TYPE)
    partition 1 2 | 3            cuts every link between the groups
    isolate ID / heal            cuts ID off / restores every link (crashed nodes stay down)
    crash ID / restart ID        ID stops (unpersisted state is lost) / starts from its storage
    compact ID INDEX             ID snapshots its state machine at INDEX and drops the log
    add-learner / add-voter / promote / remove ID
                                 the leader proposes that membership change
    transfer FROM TO             FROM (the leader) hands leadership to TO
    read-index ID CTX            ID asks for a read index
    status [ID...] / log ID / applied ID
                                 roles and terms (and the leader's progress when IDs are
                                 given), a member's log, its state machine

Delivered messages print as `harness.describe` renders them (`1->2 APP t2 i1/t1 c1 [t2/2]`:
sender->receiver, type, term, previous index/term, commit, entries as term/index). While
handling Readies, `> 2 is FOLLOWER of 1 at term 2` reports a role or leader change and
`> 2 read ctx=r index=3` a ReadIndex answer. A RaftError is printed as `error: ...`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from raftbox.raft.core import Ready
from raftbox.raft.errors import RaftError
from raftbox.raft.harness import Harness, describe
from raftbox.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    StateRole,
)

REWRITE_ENV = "RAFTBOX_REWRITE"


# -- the file format -------------------------------------------------------------------------------
@dataclass
class Block:
    text: list[str]  # comment and blank lines before the command
    command: str
    expected: list[str]
    line: int  # where the command is, for messages


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Split a scenario into command blocks (and the trailing text after the last one)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip() or ln.startswith("#"):
            pending.append(ln)
            i += 1
            continue
        cmd_line = i + 1
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"line {cmd_line}: command {ln!r} is not followed by '----'")
        i += 2
        out: list[str] = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append(Block(pending, ln, out, cmd_line))
        pending = []
    return blocks, pending


def render(blocks: list[Block], outputs: list[list[str]], trailing: list[str]) -> str:
    out: list[str] = []
    for b, o in zip(blocks, outputs, strict=True):
        out.extend(b.text)
        out.append(b.command)
        out.append("----")
        out.extend(o)
    out.extend(trailing)
    return "\n".join(out) + "\n"


# -- rendering state -------------------------------------------------------------------------------
def entry_str(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"t{e.term}/{e.index} conf {cc.type.name} {cc.node_id}"
    if not e.data:
        return f"t{e.term}/{e.index} noop"
    return f"t{e.term}/{e.index} {e.data.decode(errors='replace')}"


def ready_lines(i: int, rd: Ready) -> list[str]:
    out = [f"Ready {i}:"]
    if rd.soft_state is not None:
        out.append(f"  soft: lead={rd.soft_state.leader} {rd.soft_state.role.name}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"  hard: term={hs.term} vote={hs.vote} commit={hs.commit}")
    if rd.snapshot is not None:
        m = rd.snapshot.meta
        out.append(f"  snapshot: i{m.index}/t{m.term} voters={m.conf_state.voters}")
    if rd.entries:
        out.append("  entries: " + ", ".join(entry_str(e) for e in rd.entries))
    if rd.committed_entries:
        out.append("  committed: " + ", ".join(entry_str(e) for e in rd.committed_entries))
    for rs in rd.read_states:
        out.append(f"  read: ctx={rs.context.decode()} index={rs.index}")
    for m in rd.messages:
        out.append("  send " + describe(m))
    if rd.must_sync:
        out.append("  must-sync")
    return out


# -- the driver ------------------------------------------------------------------------------------
class Driver:
    def __init__(self) -> None:
        self.h: Harness | None = None
        self.down: set[int] = set()
        self.cuts: set[tuple[int, int]] = set()

    @property
    def harness(self) -> Harness:
        if self.h is None:
            raise ValueError("no cluster: start with add-nodes")
        return self.h

    def run(self, command: str) -> list[str]:
        words = command.split()
        name, args = words[0], words[1:]
        fn = getattr(self, "cmd_" + name.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"unknown command {name!r}")
        try:
            out = fn(*args)
        except RaftError as e:
            out = [f"error: {type(e).__name__}: {e}"]
        return out or ["ok"]

    # -- plumbing ----------------------------------------------------------------------------
    def _up(self) -> list[int]:
        return [i for i in self.harness.members if i not in self.down]

    def _process(self, i: int) -> list[str]:
        """Handle one Ready of node i; returns the events worth a transcript line."""
        rd = self.harness.process(i)
        if rd is None:
            return []
        out = []
        if rd.soft_state is not None:
            ss = rd.soft_state
            who = f" of {ss.leader}" if ss.role == StateRole.FOLLOWER and ss.leader else ""
            out.append(f"> {i} is {ss.role.name}{who} at term {self.harness.node(i).term}")
        for rs in rd.read_states:
            out.append(f"> {i} read ctx={rs.context.decode()} index={rs.index}")
        return out

    def _deliverable(self, m: Message) -> bool:
        return (
            m.to in self.harness.members
            and m.to not in self.down
            and m.frm not in self.down
            and (m.frm, m.to) not in self.cuts
        )

    def _deliver(self) -> list[str]:
        h = self.harness
        batch, h.queue = h.queue, []
        out = []
        for m in batch:
            if not self._deliverable(m):
                continue
            out.append(describe(m))
            h.node(m.to).step(m)
        return out

    def _leader(self) -> int:
        lead = self.harness.leader()
        if lead is None:
            raise ValueError("no leader")
        return lead

    # -- commands -----------------------------------------------------------------------------
    def cmd_add_nodes(self, n: str, *opts: str) -> list[str]:
        kw: dict = {}
        names = {
            "election": "election_ticks",
            "heartbeat": "heartbeat_ticks",
            "chunk": "snapshot_chunk_bytes",
            "inflight": "max_inflight_msgs",
            "max-msg": "max_size_per_msg_bytes",
            "seed": "seed",
        }
        for o in opts:
            k, v = o.split("=", 1)
            if k in ("pre-vote", "check-quorum"):
                kw[k.replace("-", "_")] = v == "on"
            else:
                kw[names[k]] = int(v)
        self.h = Harness(list(range(1, int(n) + 1)), **kw)
        return []

    def cmd_add_node(self, i: str) -> list[str]:
        self.harness.add_member(int(i))
        return []

    def cmd_campaign(self, i: str) -> list[str]:
        self.harness.node(int(i)).campaign()
        return []

    def cmd_propose(self, i: str, data: str) -> list[str]:
        self.harness.node(int(i)).propose(data.encode())
        return []

    def cmd_tick(self, i: str, n: str = "1") -> list[str]:
        node = int(i)
        if node in self.down:
            raise ValueError(f"{node} is down")
        self.harness.tick(node, int(n))
        return []

    def cmd_tick_heartbeat(self, i: str | None = None) -> list[str]:
        node = int(i) if i is not None else self._leader()
        self.harness.tick(node, self.harness.node(node).cfg.heartbeat_ticks)
        return []

    def cmd_tick_election(self, i: str) -> list[str]:
        node = self.harness.node(int(i))
        if node.role == StateRole.LEADER:
            n = node.cfg.election_ticks - node.election_elapsed
        else:
            n = node.randomized_election_timeout - node.election_elapsed
        self.harness.tick(int(i), max(n, 1))
        return [f"{max(n, 1)} ticks"]

    def cmd_process_ready(self, *ids: str) -> list[str]:
        out: list[str] = []
        for i in map(int, ids):
            rd = self.harness.process(i)
            out.extend(ready_lines(i, rd) if rd is not None else [f"Ready {i}: (none)"])
        return out

    def cmd_deliver(self) -> list[str]:
        return self._deliver()

    def _round(self, out: list[str]) -> bool:
        moved = False
        for i in self._up():
            if self.harness.node(i).has_ready():
                out.extend(self._process(i))
                moved = True
        self.harness.queue = [m for m in self.harness.queue if self._deliverable(m)]
        if self.harness.queue:
            out.extend(self._deliver())
            moved = True
        return moved

    def cmd_round(self, n: str = "1") -> list[str]:
        out: list[str] = []
        for _ in range(int(n)):
            self._round(out)
        return out

    def cmd_stabilize(self) -> list[str]:
        out: list[str] = []
        for _ in range(1000):
            if not self._round(out):
                return out
        raise RuntimeError("cluster did not stabilize")

    def cmd_drop(self, frm: str, to: str, kind: str | None = None) -> list[str]:
        h = self.harness
        keep, out = [], []
        for m in h.queue:
            if m.frm == int(frm) and m.to == int(to) and (kind is None or m.type.name == kind):
                out.append("dropped " + describe(m))
            else:
                keep.append(m)
        h.queue = keep
        return out

    def cmd_partition(self, *words: str) -> list[str]:
        groups = [[int(x) for x in g.split()] for g in " ".join(words).split("|")]
        for a in groups:
            for b in groups:
                if a is not b:
                    self.cuts.update((x, y) for x in a for y in b)
        return []

    def cmd_isolate(self, i: str) -> list[str]:
        node = int(i)
        for j in self.harness.members:
            if j != node:
                self.cuts.update({(node, j), (j, node)})
        return []

    def cmd_heal(self) -> list[str]:
        self.cuts.clear()
        return []

    def cmd_crash(self, i: str) -> list[str]:
        self.down.add(int(i))
        return []

    def cmd_restart(self, i: str) -> list[str]:
        node = int(i)
        self.harness.restart(node)
        self.down.discard(node)
        n = self.harness.node(node)
        return [f"{node} restarted: term={n.term} vote={n.vote} commit={n.log.committed}"]

    def cmd_compact(self, i: str, index: str) -> list[str]:
        # The state machine's state: what it was restored from, then the data it applied.
        m = self.harness.members[int(i)]
        parts = [m.snapshot_data] if m.snapshot_data else []
        parts += [
            e.data
            for e in m.applied
            if e.index <= int(index) and e.type == EntryType.NORMAL and e.data
            if e.data != b"<snapshot>"
        ]
        data = b",".join(parts)
        snap = self.harness.compact(int(i), int(index), data)
        return [f"snapshot i{snap.meta.index}/t{snap.meta.term} data={snap.data.decode()}"]

    def _conf_change(self, kind: ConfChangeType, i: str) -> list[str]:
        node = int(i)
        if kind != ConfChangeType.REMOVE and node not in self.harness.members:
            self.harness.add_member(node)
        self.harness.node(self._leader()).propose_conf_change(ConfChange(kind, node))
        return []

    def cmd_add_learner(self, i: str) -> list[str]:
        return self._conf_change(ConfChangeType.ADD_LEARNER, i)

    def cmd_add_voter(self, i: str) -> list[str]:
        return self._conf_change(ConfChangeType.ADD_VOTER, i)

    cmd_promote = cmd_add_voter

    def cmd_remove(self, i: str) -> list[str]:
        return self._conf_change(ConfChangeType.REMOVE, i)

    def cmd_transfer(self, frm: str, to: str) -> list[str]:
        self.harness.node(int(frm)).transfer_leadership(int(to))
        return []

    def cmd_read_index(self, i: str, ctx: str) -> list[str]:
        self.harness.node(int(i)).read_index(ctx.encode())
        return []

    def cmd_status(self, *ids: str) -> list[str]:
        out = []
        for i in map(int, ids) if ids else sorted(self.harness.members):
            st = self.harness.node(i).status()
            down = " (down)" if i in self.down else ""
            cs = st.conf_state
            out.append(
                f"{i}: {st.role.name} term={st.term} vote={st.vote} lead={st.leader} "
                f"commit={st.commit} applied={st.applied} last={st.last_index} "
                f"voters={','.join(map(str, cs.voters))}"
                + (f" learners={','.join(map(str, cs.learners))}" if cs.learners else "")
                + down
            )
            for pid, pr in sorted(st.progress.items()) if ids else ():
                out.append(
                    f"  {pid}: {pr.state.name} match={pr.match} next={pr.next}"
                    + (" learner" if pr.is_learner else "")
                )
        return out

    def cmd_log(self, i: str) -> list[str]:
        node = self.harness.node(int(i))
        lg = node.log
        snap = lg.snapshot()
        out = [f"snapshot i{snap.meta.index}/t{snap.meta.term}"]
        ents = lg.entries_from(lg.first_index(), None)
        for e in ents:
            marks = []
            if e.index == lg.committed:
                marks.append("<- commit")
            out.append(entry_str(e) + (" " + " ".join(marks) if marks else ""))
        return out

    def cmd_applied(self, i: str) -> list[str]:
        """The state machine: the snapshot it was restored from, then the entries it applied."""
        m = self.harness.members[int(i)]
        marks = [k for k, e in enumerate(m.applied) if e.data == b"<snapshot>"]
        after = m.applied[marks[-1] + 1 :] if marks else m.applied
        data = [e.data.decode() for e in after if e.type == EntryType.NORMAL and e.data]
        if m.snapshot_data:
            data.insert(0, f"[snapshot {m.snapshot_data.decode()}]")
        return [" ".join(data) if data else "(nothing)"]

    def cmd_messages(self) -> list[str]:
        """The queued (sent, not yet delivered) messages."""
        return [describe(m) for m in self.harness.queue]


def run_file(path: Path) -> tuple[str, str]:
    """Replay `path`; returns (the file's text, the text with actual outputs)."""
    text = path.read_text()
    blocks, trailing = parse(text)
    d = Driver()
    outputs = []
    for b in blocks:
        try:
            outputs.append(d.run(b.command))
        except Exception as e:
            raise AssertionError(f"{path.name}:{b.line}: {b.command!r} failed: {e!r}") from e
    return text, render(blocks, outputs, trailing)


def rewrite_requested() -> bool:
    return os.environ.get(REWRITE_ENV, "") not in ("", "0")


__all__ = ["Driver", "parse", "render", "rewrite_requested", "run_file"]
