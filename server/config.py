"""Server settings."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .http_limits import Limits
from .tokens import MAX_TOKENS_PER_AUTH_METHOD


def default_server_id() -> str:
    """The name clients sign their AWS login proofs for, unless ``--server-id`` says otherwise."""
    return f"cedarkey-{socket.gethostname()}"


@dataclass
class Settings:
    data_dir: Path
    server_id: str = field(default_factory=default_server_id)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8200
    sts_timeout: float = 10.0
    audit_decisions: bool = False
    max_body: int = 1 << 20
    master_key_env: str = "CEDARKEY_MASTER_KEY"
    policies_dir: Path | None = None
    loop: str = "auto"  # uvicorn's event loop: auto (uvloop when installed) | asyncio | uvloop
    http: str = "auto"  # uvicorn's HTTP parser: auto (httptools when installed) | h11 | httptools
    huge_pages: bool = True  # back the loaded model with transparent huge pages (see server/memory.py)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (a reverse proxy in front), comma-separated
    # addresses or "*". None: no one's; the client address is the TCP peer's, as bound-ips checks need.
    forwarded_allow_ips: str | None = None
    # STS URLs allowed beside AWS's own endpoints (see server/sts_urls.py).
    allowed_sts_urls: tuple[str, ...] = ()
    # Where /metrics is served without a token ("HOST:PORT"); None: only on the main port, to a token.
    metrics_address: str | None = None
    # Connections and requests in flight at once; beyond it uvicorn answers 503 (see server/http_limits.py).
    max_connections: int = 1000
    http_limits: Limits = field(default_factory=Limits)
    # Refused logins per source address: a burst, then this many a second (see server/login_limit.py).
    login_burst: int = 20
    login_refill: float = 1.0
    # Seconds between the audit lines that count a limited address's refusals (see server/login_limit.py).
    login_audit_interval: float = 60.0
    # Live tokens one auth method may hold; a login beyond it is refused 429 TooManyTokens (see server/tokens.py).
    max_tokens_per_auth_method: int = MAX_TOKENS_PER_AUTH_METHOD
    # HTTPS: a PEM certificate (chain) and its key, both or neither (the console's cookie is then Secure).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The server log's level, and one line per request (method, command, status, duration, access id) or none.
    log_level: int = logging.INFO
    access_log: bool = False
    # Server processes on the port (see server/workers.py); 1: this process serves.
    workers: int = 1

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.log"
