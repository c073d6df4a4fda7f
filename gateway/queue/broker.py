"""Which broker the queue uses: the configured one, else local Redis, else embedded."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from gateway.settings import GatewaySettings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _reachable(url: str, timeout_s: float = 0.5) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=timeout_s
        ):
            return True
    except OSError:
        return False


def resolve_broker_url(settings: GatewaySettings) -> str:
    """The configured broker; else local Redis when reachable; else Celery over SQLite in
    the data dir (embedded: nothing to install or run)."""
    if settings.queue.broker_url:
        return settings.queue.broker_url
    if _reachable(DEFAULT_REDIS_URL):
        return DEFAULT_REDIS_URL
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqla+sqlite:///{(settings.data_dir / 'broker.sqlite').resolve()}"
