"""Starting the server: ``init`` (data dir, master key, store, admin) and ``serve`` (uvicorn)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from .app import build_app, metrics_app
from .audit import AuditLog
from .config import Settings
from .http_limits import protocol
from .policy_watch import PolicyWatcher
from .secret_box import KEY_CHECK_META, KEY_FILE, MasterKeyError, SecretBox, SecretBoxError, load_or_create_master_key
from .service import INITIALIZED_META, Service, bootstrap, reset_admin
from .store import Store, StoreError
from .sts_urls import StsUrls
from .workers import Worker, listening_socket, supervise

log = logging.getLogger("cedarkey.server")

#: The embedded store's file in the data dir.
SQLITE_FILE = "cedarkey.db"


def open_store(settings: Settings) -> Store:
    if settings.database_url:
        from .postgres_store import PostgresStore  # the multi-node backend

        return PostgresStore(settings.database_url)
    from .sqlite_store import SqliteStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    return SqliteStore(settings.data_dir / SQLITE_FILE)


def initialize(settings: Settings) -> tuple[Store, SecretBox, dict[str, str] | None]:
    """Opens (creating if needed) the data dir, the store and the master key; creates the admin on first
    start. The admin's credentials come back once, on the start that created them. A master key that is not
    the store's raises MasterKeyError (a new key is made only for a store not initialized yet)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings)
    try:
        initialized = store.get_meta(INITIALIZED_META) is not None
        box = SecretBox(load_or_create_master_key(settings.data_dir, os.environ, create=not initialized))
        admin = bootstrap(store, box.key_check())
        check_master_key(store, box, _key_source(settings))
    except BaseException:
        store.close()
        raise
    return store, box, admin


def reset_admin_key(settings: Settings, operator: str) -> tuple[dict[str, str], int]:
    """``init --reset-admin``: a new ``/admin`` key (``service.reset_admin``), only on an initialized store whose
    master key this node holds; StoreError or MasterKeyError, with nothing written, otherwise."""
    if not settings.database_url and not (settings.data_dir / SQLITE_FILE).is_file():
        raise StoreError(f"{settings.data_dir} holds no store: there is no admin to reset (cedarkey init makes one)")
    store = open_store(settings)
    try:
        if store.get_meta(INITIALIZED_META) is None:
            raise StoreError(f"{store.where} is not initialized: there is no admin to reset (cedarkey init makes one)")
        box = SecretBox(load_or_create_master_key(settings.data_dir, os.environ, create=False))
        check_master_key(store, box, _key_source(settings))
        audit = AuditLog(settings.audit_path)
        try:
            return reset_admin(store, audit, operator)
        finally:
            audit.close()
    finally:
        store.close()


def check_master_key(store: Store, box: SecretBox, source: str) -> None:
    """MasterKeyError unless ``box`` holds the key the store was initialized with. A store from before the
    check value gets one, once a stored item shows the key is its own."""
    check = store.get_meta(KEY_CHECK_META)
    if check is not None:
        if not box.opens(check):
            raise MasterKeyError(
                f"the master key from {source} is not the one this store was initialized with: every node of a "
                "store must have its key; start with that key (nothing was written)"
            )
        return
    for item in store.list_items()[:1]:
        try:
            box.decrypt(item, item.nonce, item.ciphertext, legacy=True)
        except SecretBoxError:
            raise MasterKeyError(
                f"the master key from {source} does not decrypt this store's items: start with the store's key"
            ) from None
    with store.batch():
        if store.get_meta(KEY_CHECK_META) is None:
            store.set_meta(KEY_CHECK_META, box.key_check())


def _key_source(settings: Settings) -> str:
    env_var = settings.master_key_env
    return env_var if os.environ.get(env_var) is not None else str(settings.data_dir / KEY_FILE)


def create_app(settings: Settings, worker: Worker | None = None) -> tuple[Starlette, dict[str, str] | None]:
    store, box, admin = initialize(settings)
    service = Service(settings, store, box, worker=worker)
    if settings.policies_dir is not None:
        service.policy_watcher = PolicyWatcher(service, settings.policies_dir)
        service.policy_watcher.apply_at_start()
    return build_app(service), admin


def serve(settings: Settings, *, on_admin: object = None, worker: Worker | None = None) -> int:
    """Serves until SIGTERM or SIGINT: in this process, or (``settings.workers`` > 1) in that many worker
    processes this one supervises (see :mod:`.workers`); the exit status."""
    where = f" worker {worker.index}" if worker is not None else ""
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s %(levelname)s %(name)s{where} %(message)s")
    # httpx logs every STS call at INFO; the audit log already records each login with its outcome.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if worker is None and settings.workers > 1:
        store, _, admin = initialize(settings)  # once, before the workers open the store
        store.close()
        if admin is not None and callable(on_admin):
            on_admin(admin)
        return supervise(settings, settings.workers)
    app, admin = create_app(settings, worker)
    if admin is not None and callable(on_admin):
        on_admin(admin)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop=settings.loop,  # type: ignore[arg-type]
        http=protocol(settings.http, settings.http_limits),
        h11_max_incomplete_event_size=settings.http_limits.max_head,
        limit_concurrency=settings.max_connections,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local process could then pick the
        # address that bound-ips checks. Only a proxy named with --forwarded-allow-ips is believed.
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="warning",
        access_log=False,  # cedarkey's own (--access-log) names the command and the caller, not a raw path
        server_header=False,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    server = _Server(config, settings, app.state.service)
    side = _metrics_server(app, settings.metrics_address)

    sockets = [listening_socket(settings.host, settings.port, listen=True)] if worker is not None else None

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, app.state.service.audit.reopen)  # logrotate moved audit.log
        task = loop.create_task(side.serve()) if side is not None else None
        await server.serve(sockets)
        if side is not None and task is not None:
            side.should_exit = True
            await task

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(run())
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does, and when it stops."""

    def __init__(self, config: uvicorn.Config, settings: Settings, service: Service) -> None:
        super().__init__(config)
        self._settings, self._service = settings, service

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        if self._service.worker is not None:
            self._service.worker.listening.set()
        scheme = "https" if self._settings.tls_cert else "http"
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info(
                    "listening on %s://%s:%d, server id %r, store %s",
                    scheme,
                    shown,
                    port,
                    self._settings.server_id,
                    self._service.store.where,
                )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("shutting down: finishing the requests in flight")
        self._service.shutting_down = True  # long polls (watch) answer now instead of holding the shutdown
        await super().shutdown(sockets)
        log.info("stopped")


class _SideServer(uvicorn.Server):
    """A second server in the same loop: the main one owns the signals and tells it when to stop."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _metrics_server(app: Starlette, address: str | None) -> _SideServer | None:
    if address is None:
        return None

    host, port = parse_address(address)
    config = uvicorn.Config(
        metrics_app(app.state.service), host=host, port=port, lifespan="off", log_level="warning", access_log=False
    )
    return _SideServer(config)


def check_settings(settings: Settings) -> None:
    """ValueError naming a setting that cannot be served (before anything is opened or written)."""
    StsUrls(settings.allowed_sts_urls)
    if settings.metrics_address is not None:
        parse_address(settings.metrics_address)
        if settings.workers > 1:  # each worker counts its own requests: one scrape would show one worker's
            raise ValueError("--metrics-address: not with --workers above 1 (each worker counts only its own requests)")
    if settings.workers < 1:
        raise ValueError("--workers: at least 1")
    if settings.max_connections < 1:
        raise ValueError("--max-connections: at least 1")
    if not settings.http_limits.head_timeout > 0:
        raise ValueError("--request-timeout: more than 0 seconds")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ValueError("--tls-cert and --tls-key: both, or neither")
    for flag, path in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key)):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag}: no file at {path}")
    if settings.max_tokens_per_auth_method < 1:
        raise ValueError("--max-tokens-per-auth-method: at least 1")
    if not settings.login_audit_interval > 0:
        raise ValueError("login_audit_interval: more than 0 seconds")


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9200`` for IPv6); ValueError naming what is wrong."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: not HOST:PORT")
    return host, int(port)


def data_dir_default() -> Path:
    return Path(os.environ.get("CEDARKEY_DATA_DIR", "./data"))
