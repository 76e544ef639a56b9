"""Assemble roles into one process: `raftbox serve`, `raftbox up`. (The admin commands that
call a running process, `raftbox user ...`, `raftbox admin gc`, are `raftbox.admincli`.)

A process hosts any of the roles `meta` (a Raft member with the metadata state machine and the
api routes), `block` (content routes; blocks in a `BlockStore`) and `notify` (long-poll and the
push stream, `raftbox.notify`). A meta process serves the content routes too. A block-only
process (`--roles block --meta URL,...`), a blockserver, holds no state: it serves the content
routes and the native block protocol and reaches meta through `RemoteMetaClient` (the internal
routes every meta member serves to admin-token holders), failing over between the URLs given.

The block store is `--blocks URL` (file://DIR, s3://BUCKET/PREFIX?..., default DATA/blocks),
built by `raftbox.blocks.build_store`: zstd at `--compress-level` (0: off), retries, a bound on
concurrent backend calls, and a fact cache (`--cache lru://` in-process, or
`memcached://HOST:PORT` shared by a fleet) whose presence facts are keyed by the GC generation.
`--chunking cdc|fixed` is the cluster's chunking setting. The meta leader collects garbage every
`--gc-interval-s` (`raftbox.gc`). Every role is served on one public HTTPS address, routed by path
whatever the Host header. `meta` also listens on a peer address for Raft and internal RPC,
in mutual TLS with the member certificates of a bundle from `raftbox cluster init` (`serve
--cluster`; a single-member group without one opens no peer port), and serves the change feed
notify roots follow. `notify` inside a meta process is a root fed by the local member; a process
with `notify` alone is a root (`--meta URL,...`) or a leaf (`--notify-root URL,...`), see
`raftbox.notify.process`. A blockserver or a notify leaf started with `--workers N` is N such
processes sharing its port, under a supervisor that restarts them (`raftbox.workers`).

At start, before serving, every meta member and blockserver checks that its `--blocks` is the
cluster's one block store (`raftbox.storecheck`: a marker block the first leader wrote); if not,
the process exits with status 78 and says what to fix. Every application logs one line per
request (`--access-log plain|json|off`, to stderr or `--access-log-file`; `raftbox.api.accesslog`).
Accounts and tokens are managed through admin routes (`raftbox user list|add|disable|enable|
remove`, `raftbox token revoke`; `raftbox.api.accounts`).

`raftbox up` is `serve` with every role, a single-member Raft group, a local block directory,
TLS from a CA it makes on first start, and a first account; it prints how to point the official
SDK at it and writes `DIR/token` and `DIR/ca.pem` for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import secrets
import signal
import ssl
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from raftbox import atomic, storecheck
from raftbox.api import accesslog
from raftbox.api.http import ApiServer
from raftbox.api.metaclient import InternalRoutes, LocalMetaClient, RemoteMetaClient
from raftbox.api.native import NativeRoutes
from raftbox.api.oauth import OAuthRoutes
from raftbox.blocks.cache import GenerationKeyedCache, open_cache
from raftbox.blocks.chunker import Chunking
from raftbox.blocks.service import BlockService
from raftbox.blocks.stack import build_store
from raftbox.gc import GarbageCollector, GcConfig
from raftbox.httpserve import HttpLimits, HttpSite
from raftbox.meta import commands as C
from raftbox.meta.fsm import MetaStore
from raftbox.meta.service import MetaService
from raftbox.notify import LocalFeed, MetaFeedServer, NotifyConfig, NotifyService
from raftbox.notify.process import NotifyProcess, NotifyProcessConfig, raise_fd_limit
from raftbox.notify.service import ROUTE as LONGPOLL_ROUTE
from raftbox.ops.process import Ops
from raftbox.raft.node import NodeConfig, RaftNode
from raftbox.tls import PeerTLS, ensure_local_ca, server_context
from raftbox.web.auth import WebAuth, ensure_first_password
from raftbox.web.pages import add_web

log = logging.getLogger(__name__)

Address = tuple[str, int]


ROLES = ("meta", "block", "notify")


class ConfigError(ValueError):
    """Settings that cannot work together: the process does not start, and the message says
    what to change (the CLI prints it as a usage error, exit status 2)."""


@dataclass
class ServeConfig:
    """Everything a process is started with (`raftbox serve`'s flags; `up_config` for `raftbox
    up`). `validate()` holds every rule about which roles need which settings, in one place."""

    node_id: int
    data: str
    listen: Address
    peer_listen: Address
    peers: dict[int, Address]
    roles: tuple[str, ...] = ("meta", "block", "notify")
    peer_tls: PeerTLS | None = None  # mutual TLS on the peer port (`serve --cluster`)
    blocks: str = ""  # block store URL; default file://DATA/blocks
    tls_cert: str | None = None
    tls_key: str | None = None
    admin_token: str | None = None
    tick_ms: int = 50
    election_ticks: int = 10
    join: bool = False
    hosts: tuple[str, ...] = field(default_factory=tuple)
    # notify role (see raftbox.notify): a notify-only process follows meta members (a root) or
    # roots (a leaf); `ca` verifies them; `plain_http` only behind a TLS-terminating balancer
    meta_urls: tuple[str, ...] = ()
    notify_roots: tuple[str, ...] = ()
    ca: str | None = None
    plain_http: bool = False
    max_connections: int | None = None  # per process; None: 1,000,000 notify-only, else 100,000
    http: HttpLimits = field(default_factory=HttpLimits)  # the public port's limits
    longpoll_min_timeout_s: float = 30.0  # test-only below 30 (the API minimum)
    longpoll_wait_cap_s: float | None = None  # test-only: end every wait after this
    worker_threads: int = 32
    # blocks: the cluster's chunking; store compression (0 = off); the fact cache
    chunking: str = "cdc"
    compress_level: int = 3
    cache: str = "lru://"
    cache_present_ttl_s: int = 3600
    # garbage collection (meta members; the leader runs it every gc_interval_s, 0 = never)
    gc_interval_s: float = 3600.0
    gc_grace_s: float = 6 * 3600.0
    gc_upload_keep_s: float = 7 * 24 * 3600.0
    # one line per request: plain, json or off; to stderr, or to access_log_file
    access_log: str = "plain"
    access_log_file: str | None = None
    public_url: str | None = None  # where shared link URLs point (None: the request's Host)
    store_marker_wait_s: float = 30.0  # how long a process waits for the cluster's store marker
    default_quota_bytes: int | None = None  # quota of accounts made here (None: none)
    metrics_listen: Address | None = None  # also serve /metrics here, plain HTTP, no auth
    oauth_access_ttl_s: float = 4 * 3600.0  # OAuth2 apps' access tokens (raftbox.api.oauth)
    workers: int = 1  # >1: a supervisor of that many processes on one port (raftbox.workers)
    worker: tuple[int, int] | None = None  # (i, n): this process is worker i of n

    def validate(self) -> None:
        """`ConfigError` naming the first setting, or combination of roles and settings, that
        cannot work; nothing is touched. `Server` calls it; the CLI calls it first, to print
        the message as a usage error."""
        roles = set(self.roles)
        if unknown := roles - set(ROLES):
            raise ConfigError(f"--roles: unknown role(s) {', '.join(sorted(unknown))}")
        if not 0 <= self.compress_level <= 22:
            raise ConfigError("--compress-level: 0 (off) or a zstd level 1..22")
        if self.gc_grace_s <= self.cache_present_ttl_s:
            raise ConfigError("--gc-grace-s must be longer than the cache's presence TTL")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together (a certificate and its key)")
        for flag, f in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if f and not os.path.isfile(f):
                raise ConfigError(f"{flag}: no such file: {f}")
        if self.workers < 1 or ((self.workers > 1 or self.worker) and not self._stateless(roles)):
            raise ConfigError("--workers: 1, or N > 1 for a blockserver or a notify leaf only")
        if "meta" in roles:
            self._validate_member()
        else:
            self._validate_without_meta(roles)

    def _stateless(self, roles: set[str]) -> bool:
        return roles == {"block"} or (roles == {"notify"} and bool(self.notify_roots))

    def _validate_member(self) -> None:
        if self.node_id <= 0:
            raise ConfigError("the meta role needs --node-id (or --cluster DIR/member-N)")
        if self.peer_tls is None and (self.join or set(self.peers) - {self.node_id}):
            raise ConfigError(
                "a cluster member needs mutual TLS on its peer port: make bundles with "
                "`raftbox cluster init --members 1=HOST:PORT,... --out DIR` and start each member "
                "with `raftbox serve --cluster DIR/member-N`"
            )
        if self.plain_http:
            raise ConfigError("--plain-http is for block- or notify-only processes (not meta)")

    def _validate_without_meta(self, roles: set[str]) -> None:
        if roles not in ({"notify"}, {"block"}):
            raise ConfigError("without meta, a process has the block role or the notify role")
        if roles == {"block"} and not self.meta_urls:
            raise ConfigError("a block-only process (a blockserver) needs --meta URL[,URL]")
        if roles == {"notify"} and bool(self.meta_urls) == bool(self.notify_roots):
            raise ConfigError(
                "a notify-only process needs --meta (a root) or --notify-root (a leaf)"
            )
        if not (
            self.admin_token
            or os.environ.get("RAFTBOX_ADMIN_TOKEN")
            or os.path.exists(os.path.join(self.data, "admin.token"))
        ):
            raise ConfigError("a process without the meta role needs the cluster's --admin-token")

    @property
    def blocks_url(self) -> str:
        return self.blocks or "file://" + os.path.join(self.data, "blocks")

    def gc_config(self) -> GcConfig:
        return GcConfig(
            grace_s=self.gc_grace_s,
            upload_keep_s=self.gc_upload_keep_s,
            interval_s=self.gc_interval_s,
            present_ttl_s=self.cache_present_ttl_s,
        )

    def block_service(self, generation, metrics_registry=None) -> BlockService:
        """The block store stack from the flags; `generation()` keys the presence facts."""
        url = self.blocks_url
        cache = None
        if self.cache and self.cache != "none":
            cache = GenerationKeyedCache(open_cache(self.cache), generation)
        store = build_store(
            url,
            compress_level=self.compress_level or None,
            cache=cache,
            present_ttl_s=self.cache_present_ttl_s,
            metrics_registry=metrics_registry,
        )
        return BlockService(store, Chunking.parse(self.chunking))

    def http_limits(self) -> HttpLimits:
        """The public port's limits, with `max_connections` (or the role's default) in them."""
        cap = self.max_connections
        if cap is None:
            cap = 1_000_000 if set(self.roles) == {"notify"} else self.http.connections_max
            if self.worker is not None:  # below the open-file limit (raftbox.workers)
                import resource

                from raftbox.workers import connection_cap

                cap = connection_cap(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        return dataclasses.replace(self.http, connections_max=cap)

    def notify_config(self) -> NotifyConfig:
        return NotifyConfig(
            longpoll_min_timeout_s=self.longpoll_min_timeout_s,
            longpoll_wait_cap_s=self.longpoll_wait_cap_s,
        )


def prepare_shared(cfg: ServeConfig) -> None:
    """What the workers of one supervisor share, made once by it (`raftbox.workers`): the admin
    token file and, with TLS, the local CA and certificate."""
    load_admin_token(cfg)
    if not cfg.plain_http:
        tls_context(cfg)


def load_admin_token(cfg: ServeConfig) -> str:
    """--admin-token, else $RAFTBOX_ADMIN_TOKEN, else DATA/admin.token (made on first start)."""
    token = cfg.admin_token or os.environ.get("RAFTBOX_ADMIN_TOKEN")
    if token:
        return token
    path = os.path.join(cfg.data, "admin.token")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    token = "rbxadmin_" + secrets.token_urlsafe(32)  # never starts with "-" (see new_token)
    atomic.replace(path, token + "\n", 0o600)
    return token


def url_file(cfg: ServeConfig) -> str:
    """Where the process writes its URL once serving: DATA/url, or a worker's own file (its
    supervisor writes DATA/url once every worker serves; raftbox.workers)."""
    if cfg.worker is not None:
        from raftbox.workers import worker_url_file

        return worker_url_file(cfg.data, cfg.worker[0])
    return os.path.join(cfg.data, "url")


def tls_context(cfg: ServeConfig) -> tuple[ssl.SSLContext, str | None]:
    """Context for the public address, and the CA file clients should trust (if ours)."""
    if cfg.tls_cert and cfg.tls_key:
        return server_context(cfg.tls_cert, cfg.tls_key), None
    hosts = tuple(dict.fromkeys(("localhost", "127.0.0.1", cfg.listen[0], *cfg.hosts)))
    ca, cert, key = ensure_local_ca(cfg.data, hosts)
    return server_context(cert, key), ca


class Misconfigured(Exception):
    """A setting that cannot work: the process refuses to start (exit status 78, EX_CONFIG)."""


EXIT_MISCONFIGURED = 78


class Server:
    """One raftbox process. `start()` brings every role up; `stop()` takes them down."""

    def __init__(self, cfg: ServeConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        os.makedirs(cfg.data, exist_ok=True)
        self.admin_token = load_admin_token(cfg)
        self.store = (
            MetaStore(os.path.join(cfg.data, "meta.sqlite3")) if "meta" in cfg.roles else None
        )
        self.node: RaftNode | None = None
        self.failed: BaseException | None = None  # the Raft node broke: the process must stop
        self.stop_requested = asyncio.Event()
        self.meta: MetaService | None = None
        self.notify: NotifyService | None = None
        self.notify_process: NotifyProcess | None = None
        self.feed: MetaFeedServer | None = None
        self.site: HttpSite | None = None
        self.ca_file: str | None = None
        self.url = ""
        self.blocks: BlockService | None = None
        self.metaclient: RemoteMetaClient | None = None
        self.gc: GarbageCollector | None = None
        self._gc_task: asyncio.Task | None = None
        self.access_log = accesslog.configure(cfg.access_log, cfg.access_log_file)
        self.ops = Ops(self.admin_token, cfg.metrics_listen)  # /metrics, cluster view (raftbox.ops)
        self.ops.worker = cfg.worker  # named in metrics and announcements (raftbox.workers)

    def _on_fatal(self, exc: BaseException) -> None:
        self.failed = exc
        self.stop_requested.set()

    async def _owned(self, what: str, coro: Any) -> None:
        """A background part of this process, owned by the server: `stop()` cancels and awaits
        it; if it fails (it retries its own expected errors), the process stops, exit 70."""
        try:
            await coro
        except Exception as e:
            log.exception("%s failed: stopping this process", what)
            self._on_fatal(e)

    async def start(self) -> None:
        """Bring every role up; if any part fails, take down what started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        # Block work runs in worker threads (hashing, zstd, and file writes that wait on fsync):
        # the default pool (CPUs + 4) would let a few fsyncs stall every upload's hashing.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=cfg.worker_threads, thread_name_prefix="raftbox")
        )
        if "notify" in cfg.roles or cfg.worker is not None:
            raise_fd_limit()
        if self.store is None:
            if "block" in cfg.roles:
                await self._start_block_only()
            else:
                await self._start_notify_only()
            return
        self.node = RaftNode(
            NodeConfig(
                node_id=cfg.node_id,
                data_dir=cfg.data,
                peer_listen=cfg.peer_listen,
                peers=cfg.peers,
                join=cfg.join,
                tick_s=cfg.tick_ms / 1000,
                election_ticks=cfg.election_ticks,
                peer_tls=cfg.peer_tls,
            ),
            self.store,
            on_fatal=self._on_fatal,
        )
        await self.node.start()
        self.meta = MetaService(self.node, self.store)
        self.meta.default_quota_bytes = cfg.default_quota_bytes
        await self.meta.start()
        mc = LocalMetaClient(self.meta)
        self.blocks = blocks = cfg.block_service(
            lambda: mc.believed_gc_generation, self.ops.registry
        )
        await self._check_store(self._read_marker_local, self._record_marker)
        api = ApiServer(self.meta, blocks, self.admin_token, metaclient=mc)
        api.links.set_public_url(cfg.public_url)  # shared links' URLs (raftbox.api.links)
        api.add_routes(NativeRoutes(mc, blocks).routes())
        internal = InternalRoutes(self.meta)
        api.add_route("raftbox/internal/query", "admin", internal.query)
        api.add_route("raftbox/internal/write", "admin", internal.write)
        self.gc = GarbageCollector(
            self.meta,
            blocks.store,
            cfg.gc_config(),
            state_path=os.path.join(cfg.data, "gc-state.msgpack"),
        )
        api.add_route("raftbox/admin/gc", "admin", self._admin_gc)
        api.web = WebAuth(self.meta)  # the web interface: sign-in, sessions, pages (issue 14)
        api.add_routes(api.web.admin_routes())
        app = api.app()
        OAuthRoutes(self.meta, cfg.oauth_access_ttl_s, web=api.web).install(api, app)  # issue 15
        add_web(app, api, api.web)
        self._log_requests(app)
        self.feed = MetaFeedServer(self.node, self.store, self.admin_token)
        self.feed.add_routes(app)
        if "notify" in cfg.roles:
            feed = LocalFeed(self.node, self.store)
            self.notify = NotifyService(feed, cfg.notify_config(), self.admin_token)
            api.add_route(LONGPOLL_ROUTE, "none", self.notify.api_longpoll)
            api.add_route("raftbox/notify/status", "admin", self.notify.api_status)
            self.notify.add_routes(app)
            await self.notify.start()
        self.ops.for_member(api, app, self.node, lambda: self.url, self.notify)
        ctx, self.ca_file = tls_context(cfg)
        self.site = HttpSite(app, cfg.listen, ctx, cfg.http_limits())
        self.url = await self.site.start()
        self.ops.attach_site(self.site)
        await self.ops.start()
        atomic.replace(os.path.join(cfg.data, "url"), self.url + "\n")
        self._gc_task = asyncio.create_task(self._owned("GC", self.gc.run_periodically()))

    def _log_requests(self, app: web.Application) -> None:
        if self.access_log is not None:
            app.middlewares.append(self.access_log)

    async def _check_store(self, read, record=None) -> None:
        """`Misconfigured` unless this process's block store is the cluster's (storecheck)."""
        assert self.blocks is not None
        try:
            await storecheck.check(
                self.blocks.store,
                self.cfg.blocks_url + ("" if self.cfg.blocks else " (no --blocks: the default)"),
                read,
                record,
                lambda: self.node is not None and self.node.role.name == "LEADER",
                what="member" if self.meta is not None else "blockserver",
                timeout_s=self.cfg.store_marker_wait_s,
            )
        except storecheck.WrongStore as e:
            raise Misconfigured(str(e)) from None

    async def _read_marker_local(self) -> str | None:
        assert self.meta is not None
        return await self.meta.read(lambda s: s.store_marker())

    async def _record_marker(self, block_id: str) -> None:
        assert self.meta is not None
        await self.meta.write(C.SetStoreMarker(block_id))

    async def _admin_gc(self, request: web.Request, who) -> web.Response:
        assert self.gc is not None
        report = await self.gc.run()
        return web.json_response(report.as_json())

    async def _start_block_only(self) -> None:
        """A blockserver: content routes and the native protocol; meta over HTTP."""
        cfg = self.cfg
        client_ssl = ssl.create_default_context(cafile=cfg.ca)
        self.metaclient = mc = RemoteMetaClient(
            list(cfg.meta_urls), self.admin_token, ssl_context=client_ssl
        )
        self.blocks = blocks = cfg.block_service(
            lambda: mc.believed_gc_generation, self.ops.registry
        )
        await self._check_store(lambda: mc.query("store_marker"))
        api = ApiServer(None, blocks, self.admin_token, metaclient=mc)
        api.add_routes(NativeRoutes(mc, blocks).routes())
        app = api.app()
        self._log_requests(app)
        self.ops.for_blockserver(api, app, lambda: self.url, cfg.meta_urls, client_ssl)
        ctx = None
        if not cfg.plain_http:
            ctx, self.ca_file = tls_context(cfg)
        self.site = HttpSite(
            app, cfg.listen, ctx, cfg.http_limits(), reuse_port=cfg.worker is not None
        )
        self.url = await self.site.start()
        self.ops.attach_site(self.site)
        await self.ops.start()
        atomic.replace(url_file(cfg), self.url + "\n")

    async def _start_notify_only(self) -> None:
        cfg = self.cfg
        ctx = None
        if not cfg.plain_http:
            ctx, self.ca_file = tls_context(cfg)
        self.notify_process = NotifyProcess(
            NotifyProcessConfig(
                listen=cfg.listen,
                admin_token=self.admin_token,
                meta_urls=cfg.meta_urls,
                root_urls=cfg.notify_roots,
                ssl_context=ctx,
                client_ssl=ssl.create_default_context(cafile=cfg.ca),
                limits=cfg.http_limits(),
                access_log=self.access_log,
                reuse_port=cfg.worker is not None,
            ),
            cfg.notify_config(),
        )
        np = self.notify_process
        client_ssl = ssl.create_default_context(cafile=cfg.ca)
        np.setup_app = lambda app: self.ops.for_notify(  # noqa: E731
            app,
            np.service,
            np.kind,
            lambda: self.url,
            cfg.meta_urls or cfg.notify_roots,
            client_ssl,
        )
        await self.notify_process.start()
        self.notify = self.notify_process.service
        self.url = self.notify_process.url
        self.ops.attach_site(self.notify_process.site)
        await self.ops.start()
        atomic.replace(url_file(cfg), self.url + "\n")

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("https://").removeprefix("http://")

    async def stop(self) -> None:
        await self.ops.stop()
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
        if self.notify_process is not None:
            await self.notify_process.stop()
        elif self.notify is not None:
            await self.notify.stop()  # answers waiting long-polls before the runner closes
        if self.feed is not None:
            await self.feed.close()
        if self.site is not None:
            await self.site.stop()
        if self.node is not None:
            await self.node.stop()
        if self.blocks is not None:
            await self.blocks.store.aclose()
        if self.metaclient is not None:
            await self.metaclient.aclose()
        if self.store is not None:
            self.store.close()


async def _wait_for_stop(srv: Server) -> None:
    """Until SIGTERM/SIGINT, or until the Raft node breaks (then the process exits with 70)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, srv.stop_requested.set)
    await srv.stop_requested.wait()


def _exit_if_failed(srv: Server) -> None:
    if srv.failed is not None:
        raise SystemExit(70)


def run(coro) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


async def _start_or_exit(srv: Server) -> None:
    """Start `srv`; a misconfiguration is said in one line and exits with status 78."""
    try:
        await srv.start()
    except Misconfigured as e:
        print(f"raftbox: refusing to start: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_MISCONFIGURED) from None
    # What start-up made (modules, classes, the loaded state) lives as long as the process:
    # out of the cyclic GC's sight, a full collection no longer rescans it each time a large
    # request (a 1,000-entry commit_batch) allocates its thousands of objects.
    gc.freeze()


async def serve(cfg: ServeConfig) -> None:
    srv = Server(cfg)
    await _start_or_exit(srv)
    print(f"raftbox member {cfg.node_id} serving {','.join(cfg.roles)} on {srv.url}", flush=True)
    try:
        await _wait_for_stop(srv)
    finally:
        await srv.stop()
    _exit_if_failed(srv)


def up_config(data: str, listen: Address, **settings: Any) -> ServeConfig:
    """`raftbox up`'s configuration: every role, a single-member group, `settings` as given."""
    peer = ("127.0.0.1", 0)  # never bound: the group has no other member
    return ServeConfig(
        node_id=1,
        data=os.path.abspath(data),
        listen=listen,
        peer_listen=peer,
        peers={1: peer},
        **settings,
    )


async def up(cfg: ServeConfig) -> None:
    """Run `cfg` (from `up_config`) until stopped; make the first account on first start."""
    data = cfg.data
    os.makedirs(data, exist_ok=True)
    # A single-member group opens no peer port (raftbox.raft.node, "The peer port"); the port
    # file older versions wrote is no longer used.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(data, "peer.port"))
    srv = Server(cfg)
    await _start_or_exit(srv)
    assert srv.meta is not None
    token_file = os.path.join(data, "token")
    if not os.path.exists(token_file):
        _acct, token = await srv.meta.create_account("you@localhost", "raftbox user")
        atomic.replace(token_file, token + "\n", 0o600)
    with open(token_file) as f:
        token = f.read().strip()
    password = await ensure_first_password(srv.meta, "you@localhost")  # shown once
    print(banner(srv.url, token, srv.ca_file or "", data, password), flush=True)
    try:
        await _wait_for_stop(srv)
    finally:
        await srv.stop()
    _exit_if_failed(srv)


def banner(url: str, token: str, ca: str, data: str, password: str | None = None) -> str:
    hp = url.removeprefix("https://")
    # The command as the user can type it: `raftbox` if it is on PATH (else e.g. .venv/bin/…).
    import shutil

    exe = "raftbox" if shutil.which("raftbox") else os.path.relpath(sys.argv[0])
    # With `--tls-cert` there is no CA of ours: clients trust the certificate as they trust any.
    ca_shown = ca or "none of ours (--tls-cert: trusted through the system's CAs)"
    ca_arg, ca_flag = (f'ca_certs="{ca}"', f" --ca {ca}") if ca else ("", "")
    saved = os.path.join(data, "token") + (f" and {os.path.join(data, 'ca.pem')}" if ca else "")
    if password:
        web = f"  sign in as   : you@localhost  password {password}  (shown once; administrator)"
    else:
        web = "  sign in as   : you@localhost  (password shown on first start; change it with "
        web += f"`raftbox user passwd you@localhost --password-stdin --data {data}`)"
    return f"""raftbox is up at {url}/  (web interface; data in {data})
{web}
  cluster view : {url}/admin/cluster  (administrators)

  access token : {token}
  CA file      : {ca_shown}
  (also in {saved})

Point the official Dropbox SDK (pip install dropbox==12.2.4) at it:

  export DROPBOX_API_HOST={hp} DROPBOX_API_CONTENT_HOST={hp} DROPBOX_API_NOTIFY_HOST={hp}

  import dropbox; s = dropbox.create_session({ca_arg}); s.trust_env = False
  dbx = dropbox.Dropbox("{token}", session=s); print(dbx.users_get_current_account())

Keep a folder in sync with the raftbox client (from another terminal):

  {exe} login {url} --token {token}{ca_flag}
  {exe} sync --watch ~/raftbox        (or `sync DIR` once; `status DIR`)

More accounts: raftbox user add EMAIL --data {data}
Stop with Ctrl-C."""
