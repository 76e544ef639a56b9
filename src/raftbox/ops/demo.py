"""`raftbox demo`: a local cluster that shows the seed's ideas at work, narrated in the terminal.

What it starts (all on 127.0.0.1, in a temporary directory unless `--dir`):

- three meta members (`raftbox serve --cluster DIR/member-N`, bundles from `cluster init`),
  whose peer links each pass through a TCP proxy of the demo's own (`testing.FaultProxy`), so
  that it can cut a member off the network (a real partition, not a stopped process);
- a notify root following the members, and a notify leaf following the root;
- one account and two sync clients (`raftbox sync --watch`) on two folders, talking to
  different members.

Then it prints the cluster view's URL and the credentials to open it (an administrator account,
`admin@localhost`, with a generated password; and the admin token for scripts), opens nothing,
and every
`--interval-s` seconds does one of these, in turn, saying what it does and what happened:

1. **upload**: a file written in client A's folder reaches client B's folder (metadata through
   the Raft leader, bytes as blocks, B woken by a notification instead of polling);
2. **kill the leader** (SIGKILL): the others' randomized election timers fire, one asks for
   votes, wins a majority and leads a new term; the demo reads that story from the members'
   Raft record (the cluster view's `events`) and tells it; then it restarts the old leader,
   which rejoins as a follower and catches up;
3. **partition a follower**: its links are cut; writes still commit on the majority; pre-vote
   keeps the cut-off member from bumping terms and disrupting the leader; healed, it catches up;
4. **polling vs long-poll**: the same idle clients, first polling meta every second, then
   parked in long-polls on the notify leaf: the requests each costs, and how fast one change
   wakes every long-poll.

The page and the terminal tell the same story: both read the same Raft records. Ctrl-C (or
`--steps N` done) stops everything the demo started, in reverse order, and removes the
temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from raftbox import cluster
from raftbox.testing.faultproxy import FaultProxy
from raftbox.testing.procs import HOST, Proc, await_for, free_port

__all__ = ["Demo", "add_parser", "run"]

IDS = (1, 2, 3)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="a local 3-member cluster that narrates Raft at work")
    p.add_argument("--dir", help="keep everything here (default: a temporary directory)")
    p.add_argument("--interval-s", type=float, default=6.0, help="between steps (%(default)s)")
    p.add_argument("--steps", type=int, default=0, help="stop after N steps (0: until Ctrl-C)")
    p.add_argument("--tick-ms", type=int, default=50, help="the members' Raft tick")
    p.add_argument("--clients", type=int, default=20, help="idle clients in the load comparison")


def run(args: argparse.Namespace) -> int:
    demo = Demo(args.dir, args.tick_ms, args.interval_s, args.clients)
    try:
        asyncio.run(demo.main(args.steps))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # Ctrl-C or SIGTERM: `main` stopped everything on its way out
    return 0 if demo.failed is None else 1


ADMIN_EMAIL = "admin@localhost"


def sign_in(url: str, admin_token: str, password: str) -> list[str]:
    """How to open the cluster view: the administrator account the demo made, and the admin
    token for scripts."""
    return [
        f"  sign in as   : {ADMIN_EMAIL}  password {password}  (an administrator)",
        f"  admin token  : {admin_token}  (for scripts: the same data as JSON with",
        f"   curl --cacert CA -H 'Authorization: Bearer …' -X POST {url}/2/raftbox/admin/cluster_status)",
    ]


class Demo:
    def __init__(
        self,
        base: str | None,
        tick_ms: int = 50,
        interval_s: float = 6.0,
        clients: int = 20,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self._tmp = None if base else tempfile.mkdtemp(prefix="raftbox-demo-")
        self.base = Path(base or self._tmp)  # type: ignore[arg-type]
        self.tick_ms = tick_ms
        self.interval_s = interval_s
        self.clients = clients
        self.out = out or (lambda s: print(s, flush=True))
        self.procs: list[Proc] = []
        self.members: dict[int, Proc] = {}
        self.ports = {i: free_port() for i in IDS}
        self.proxies: dict[tuple[int, int], FaultProxy] = {}
        self.failed: BaseException | None = None
        self.http: aiohttp.ClientSession | None = None
        self.admin_token = ""
        self.token = ""
        self.ca = ""
        self.folders: dict[str, Path] = {}
        self.written = 0

    # -- narration ------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.out(f"[{time.strftime('%H:%M:%S')}] {text}")

    def url(self, i: int) -> str:
        return f"https://{HOST}:{self.ports[i]}"

    # -- start and stop -------------------------------------------------------------------------
    async def main(self, steps: int = 0) -> None:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM as Ctrl-C: stop what was started (Python's default would exit without it).
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await self.start()
            steps_done = 0
            actions = [self.step_upload, self.step_kill_leader, self.step_partition,
                       self.step_polling_vs_longpoll]  # fmt: skip
            while not steps or steps_done < steps:
                await asyncio.sleep(self.interval_s)
                action = actions[steps_done % len(actions)]
                steps_done += 1
                self.say(f"— step {steps_done}: {action.__doc__}")
                await action()
        except Exception as e:
            self.failed = e
            self.say(f"the demo stopped: {e!r}")
        finally:
            await self.stop()

    async def start(self) -> None:
        b = self.base
        self.say(f"starting a 3-member cluster in {b}")
        peer = {i: (HOST, free_port()) for i in IDS}
        bundles = cluster.init(str(b / "bundles"), peer)
        first = cluster.load_bundle(bundles[0])
        self.admin_token, self.ca = first.admin_token, first.ca_file
        for i in IDS:
            for j in IDS:
                if i != j:
                    proxy = FaultProxy((HOST, 0), peer[j])
                    await proxy.start()
                    self.proxies[i, j] = proxy
        for i, bundle in zip(IDS, bundles, strict=True):
            peers = ",".join(f"{j}={HOST}:{self.proxies[i, j].address[1]}" for j in IDS if j != i)
            self.members[i] = self._proc(
                f"member {i}",
                ["serve", "--cluster", bundle, "--data", str(b / f"m{i}"),
                 "--listen", f"{HOST}:{self.ports[i]}", "--blocks", f"file://{b / 'blocks'}",
                 "--peers", peers, "--tick-ms", str(self.tick_ms), "--access-log", "off"],
            )  # fmt: skip
        for i in IDS:
            await self._started(self.members[i], f"raftbox member {i} serving")
        meta = ",".join(self.url(i) for i in IDS)
        tls = ["--tls-cert", first.server_cert, "--tls-key", first.server_key, "--ca", self.ca]
        root_port, leaf_port = free_port(), free_port()
        self.root_url, self.leaf_url = f"https://{HOST}:{root_port}", f"https://{HOST}:{leaf_port}"
        root = self._proc(
            "notify root",
            ["serve", "--roles", "notify", "--data", str(b / "root"), "--listen",
             f"{HOST}:{root_port}", "--meta", meta, "--admin-token", self.admin_token,
             "--access-log", "off", *tls],
        )  # fmt: skip
        await self._started(root, "serving notify")
        leaf = self._proc(
            "notify leaf",
            ["serve", "--roles", "notify", "--data", str(b / "leaf"), "--listen",
             f"{HOST}:{leaf_port}", "--notify-root", self.root_url, "--admin-token",
             self.admin_token, "--access-log", "off", *tls],
        )  # fmt: skip
        await self._started(leaf, "serving notify")
        ctx = ssl.create_default_context(cafile=self.ca)
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=40)
        )
        leader = await self.wait_leader()
        self.say(f"member {leader} was elected leader")
        acct = await self.admin(1, "raftbox/admin/create_account", {"email": "demo@localhost"})
        self.token = acct["token"]
        await self.admin(1, "raftbox/admin/create_account", {"email": ADMIN_EMAIL})
        self.password = secrets.token_urlsafe(12)
        await self.admin(
            1,
            "raftbox/admin/set_password",
            {"email": ADMIN_EMAIL, "password": self.password, "admin": True},
        )
        for name, member in (("A", 2), ("B", 3)):
            await self._client(name, member)

        async def announced() -> list:
            kinds = {p["kind"] for p in (await self.view(1))["processes"] if p["state"] == "up"}
            return sorted(kinds) if {"notify_root", "notify_leaf"} <= kinds else []

        await await_for(announced, 30, "the notify processes announced", poll_s=0.1)
        self.say("the notify root and leaf announced themselves to the meta members")
        self.say(f"{len(self.procs)} processes up: pids {' '.join(str(p.pid) for p in self.procs)}")
        self.out("")
        self.out("Open the cluster view (any member serves it; it stays live while members die):")
        for i in IDS:
            self.out(f"  {self.url(i)}/admin/cluster")
        self.out(f"  CA file      : {self.ca}")
        for line in sign_in(self.url(1), self.admin_token, self.password):
            self.out(line)
        self.out(f"  sync folders : A {self.folders['A']}  B {self.folders['B']}")
        self.out("Stop with Ctrl-C.")
        self.out("")

    def _proc(self, name: str, args: list[str]) -> Proc:
        exe = shutil.which("raftbox", path=os.path.dirname(sys.executable)) or "raftbox"
        p = Proc(name, [exe, *args], self.base / f"{name.replace(' ', '-')}.log")
        p.start()
        self.procs.append(p)
        return p

    async def _started(self, p: Proc, needle: str, timeout_s: float = 60.0) -> None:
        async def seen() -> bool:
            if not p.alive:
                raise RuntimeError(f"{p.name} exited: see {p.log_path}")
            return needle in p.output()

        await await_for(seen, timeout_s, f"{p.name} started", poll_s=0.05, retry_on=())

    async def _client(self, name: str, member: int) -> None:
        folder = self.base / f"client-{name}"
        cfg = self.base / f"client-{name}-config"
        self.folders[name] = folder
        login = self._proc(f"login {name}", ["login", self.url(member), "--token", self.token,
                                             "--ca", self.ca, "--config", str(cfg)])  # fmt: skip
        await await_for(
            lambda: _done(login), 60, f"client {name} logged in", poll_s=0.05, retry_on=()
        )
        self.procs.remove(login)
        p = self._proc(f"sync {name}", ["sync", "--watch", str(folder), "--config", str(cfg)])
        await await_for(
            lambda: _exists(folder), 60, f"client {name} syncing", poll_s=0.05, retry_on=()
        )
        self.say(f"sync client {name} (pid {p.pid}) keeps {folder} in sync through member {member}")

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop()
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                await proxy.close()
        self.say(f"stopped {len(self.procs)} processes")
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- talking to the cluster -----------------------------------------------------------------
    async def admin(self, i: int, route: str, arg: dict | None = None) -> Any:
        assert self.http is not None
        async with self.http.post(
            f"{self.url(i)}/2/{route}",
            json=arg,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"{route} on member {i}: {r.status} {await r.text()}")
            return await r.json()

    def live(self) -> list[int]:
        return [i for i in IDS if self.members[i].alive]

    async def wait_leader(self, among: list[int] | None = None, timeout_s: float = 30.0) -> int:
        ids = among or self.live()

        async def agreed() -> int:
            sts = [await self.admin(i, "raftbox/admin/status") for i in ids]
            leaders = {s["leader"] for s in sts}
            if len(leaders) == 1 and (lead := leaders.pop()) in ids:
                return lead
            return 0

        return await await_for(agreed, timeout_s, "a leader", poll_s=0.05)

    async def upload(self, member: int, name: str, data: bytes) -> None:
        """`files/upload` of `/name` through `member`, as the demo's account."""
        assert self.http is not None
        async with self.http.post(
            f"{self.url(member)}/2/files/upload",
            data=data,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Dropbox-API-Arg": json.dumps({"path": f"/{name}", "mode": "overwrite"}),
                "Content-Type": "application/octet-stream",
            },
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"upload of {name} through member {member}: {r.status}")
            await r.read()

    async def view(self, via: int) -> dict:
        return await self.admin(via, "raftbox/admin/cluster_status", {})

    # -- the steps ------------------------------------------------------------------------------
    async def step_upload(self) -> None:
        """upload a file in client A's folder and watch it reach client B"""
        self.written += 1
        name = f"hello-{self.written}.txt"
        body = f"written by client A at {time.strftime('%H:%M:%S')}\n"
        t0 = time.monotonic()
        (self.folders["A"] / name).write_text(body)
        self.say(f"client A wrote {name} in its folder")
        target = self.folders["B"] / name
        await await_for(
            lambda: _has(target, body), 60, f"{name} at client B", poll_s=0.05, retry_on=()
        )
        self.say(
            f"{name} reached client B after {time.monotonic() - t0:.1f} s: A's client stored "
            "its blocks and committed its metadata through the Raft leader; B, parked on a "
            "notification, was woken at once and downloaded it (no polling)"
        )

    async def step_kill_leader(self) -> None:
        """kill the leader (SIGKILL) and watch the others elect a new one"""
        old = await self.wait_leader()
        st = await self.admin(old, "raftbox/admin/status")
        self.members[old].kill9()
        self.say(f"killed the leader, member {old} (term {st['term']}), with SIGKILL")
        rest = [i for i in IDS if i != old]
        new = await self.wait_leader(rest)
        view = await self.view(rest[0])
        self._tell_election(view, new)
        self.members[old].start()
        await self._started(self.members[old], f"raftbox member {old} serving")

        async def caught_up() -> dict:
            v = await self.view(new)
            m = next(m for m in v["members"] if m["id"] == old)
            return m if m.get("reachable") and m.get("lag") == 0 else {}

        m = await await_for(caught_up, 60, f"member {old} caught up", poll_s=0.1)
        self.say(
            f"member {old} restarted (pid {self.members[old].pid}): it came back as a "
            f"follower of member {new} in term "
            f"{m['term']} and caught up (applied index {m['applied']}, lag 0)"
        )

    def _tell_election(self, view: dict, new: int) -> None:
        evs = [e for e in view["events"] if e["member"] == new]
        won = [e for e in evs if e["kind"] == "leader" and e.get("won")]
        if not won:
            self.say(f"member {new} is the new leader")
            return
        w = won[-1]
        fired = [e for e in evs if e["kind"] == "timeout" and e["at_ms"] <= w["at_ms"]]
        if fired:
            f = fired[-1]
            self.say(
                f"member {new}'s randomized election timer fired after {f['elapsed_ms']} ms "
                f"without hearing a leader (it had drawn {f['drawn_ms']} ms)"
            )
        asked = [e for e in evs if e["kind"] == "campaign" and e["term"] == w["term"]]
        for a in asked:
            what = "pre-votes (would it win?)" if a["pre_vote"] else f"votes for term {w['term']}"
            self.say(f"member {new} asked members {_ids(a['asked'])} for {what}")
        self.say(
            f"member {new} won term {w['term']} with votes from members {_ids(w['votes_from'])}"
            + (
                f"; the cluster had no leader for {w['leaderless_ms']} ms"
                if w.get("leaderless_ms") is not None
                else ""
            )
        )

    async def step_partition(self) -> None:
        """cut a follower off the network, write, then heal"""
        leader = await self.wait_leader()
        cut = next(i for i in IDS if i != leader)
        before = (await self.admin(cut, "raftbox/admin/status"))["term"]
        for (a, b), proxy in self.proxies.items():
            if cut in (a, b):
                proxy.partition()
        self.say(f"cut member {cut} off from the others (its peer links drop everything)")
        self.written += 1
        name = f"during-partition-{self.written}.txt"
        t0 = time.monotonic()
        await self.upload(leader, name, b"written while a member was cut off\n")
        self.say(
            f"{name} written through leader {leader}: committed in "
            f"{(time.monotonic() - t0) * 1000:.0f} ms on a majority "
            f"(members {_ids([i for i in IDS if i != cut])}) while member {cut} heard nothing"
        )
        cut_ms = int(time.time() * 1000)

        async def fired() -> list:
            evs = (await self.admin(cut, "raftbox/admin/cluster_status", {}))["events"]
            return [
                e
                for e in evs
                if e["member"] == cut and e["kind"] == "timeout" and e["at_ms"] >= cut_ms
            ]

        timeouts = await await_for(fired, 30, f"member {cut}'s election timer", poll_s=0.1)
        during = (await self.admin(cut, "raftbox/admin/status"))["term"]
        self.say(
            f"member {cut}'s election timer fired after {timeouts[0]['elapsed_ms']} ms of "
            f"silence; its pre-vote found no majority, so its term stayed {during} "
            f"(was {before}) and it cannot depose the leader when it comes back"
            if during == before
            else f"member {cut} moved from term {before} to {during} while cut off"
        )
        for proxy in self.proxies.values():
            proxy.heal()
        self.say(f"healed member {cut}'s links")

        async def caught_up() -> dict:
            v = await self.view(leader if leader in self.live() else cut)
            m = next(m for m in v["members"] if m["id"] == cut)
            return m if m.get("reachable") and m.get("lag") == 0 else {}

        m = await await_for(caught_up, 60, f"member {cut} caught up", poll_s=0.1)
        self.say(f"member {cut} caught up with the leader (applied index {m['applied']})")

    async def step_polling_vs_longpoll(self) -> None:
        """compare idle clients polling meta with the same clients on long-poll"""
        assert self.http is not None
        n, window_s = self.clients, 5.0
        user = {"Authorization": f"Bearer {self.token}"}
        leader = await self.wait_leader()
        async with self.http.post(
            f"{self.url(leader)}/2/files/list_folder/get_latest_cursor",
            json={"path": ""},
            headers=user,
        ) as r:
            cursor = (await r.json())["cursor"]
        polls = 0

        async def poller(i: int) -> None:
            nonlocal polls
            member = IDS[i % 3]
            end = time.monotonic() + window_s
            while time.monotonic() < end:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.http.post(  # type: ignore[union-attr]
                        f"{self.url(member)}/2/files/list_folder/continue",
                        json={"cursor": cursor},
                        headers=user,
                    ) as r:
                        await r.read()
                polls += 1
                await asyncio.sleep(1.0)

        self.say(f"{n} idle clients poll meta once a second for {window_s:.0f} s…")
        await asyncio.gather(*(poller(i) for i in range(n)))
        self.say(
            f"polling: {polls} requests to the meta members in {window_s:.0f} s "
            f"({polls / window_s:.0f}/s), each a linearizable read — for no change at all"
        )
        self.say(f"the same {n} clients park a long-poll on the notify leaf for {window_s:.0f} s…")
        answered: list[float] = []

        async def longpoll() -> None:
            async with self.http.post(  # type: ignore[union-attr]
                f"{self.leaf_url}/2/files/list_folder/longpoll",
                json={"cursor": cursor, "timeout": 60},
            ) as r:
                body = json.loads(await r.read())
                if body.get("changes"):
                    answered.append(time.monotonic())

        tasks = [asyncio.ensure_future(longpoll()) for _ in range(n)]
        try:
            await asyncio.sleep(window_s)
            st = await self._leaf_status()
            self.say(
                f"long-poll: {n} requests in {window_s:.0f} s, all parked at the leaf "
                f"({st.get('waiting', '?')} waiting there), none reached meta"
            )
            t0 = time.monotonic()
            self.written += 1
            await self.upload(leader, f"wake-{self.written}.txt", b"wake up\n")
            await asyncio.wait(tasks, timeout=30)
            if answered:
                self.say(
                    f"one change (wake-{self.written}.txt) woke {len(answered)} of {n} long-polls "
                    f"within {max(answered) - t0:.2f} s of the upload: meta → root → leaf → clients"
                )
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _leaf_status(self) -> dict:
        assert self.http is not None
        with contextlib.suppress(Exception):
            async with self.http.post(
                f"{self.leaf_url}/2/raftbox/notify/status",
                headers={"Authorization": f"Bearer {self.admin_token}"},
            ) as r:
                return await r.json()
        return {}


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids) or "none"


async def _done(p: Proc) -> bool:
    if p.alive:
        return False
    if p.proc is not None and p.proc.returncode != 0:
        raise RuntimeError(f"{p.name} failed: {p.tail(5)}")
    return True


async def _exists(path: Path) -> bool:
    return path.exists()


async def _has(path: Path, body: str) -> bool:
    try:
        return path.read_text() == body
    except FileNotFoundError:
        return False
