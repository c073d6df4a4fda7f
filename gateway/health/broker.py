"""The broker: Redis answers PING (and how many job messages wait in it), AMQP accepts a TCP
connection, the embedded SQLite broker's file is there. Never shows a password."""

from __future__ import annotations

import socket
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import redis
from sqlalchemy import Engine

from gateway.health.heartbeat import Beat, last_seen
from gateway.health.status import Level, PartHealth, as_utc
from gateway.queue.app import QUEUE
from gateway.settings import GatewaySettings
from gateway.web import probes

PART = "broker"
SLOW_S = 0.5
PRIORITY_STEPS = 10  # kombu's Redis priority lists: QUEUE, QUEUE:1 .. QUEUE:9


def redis_messages_waiting(url: str, timeout_s: float) -> int:
    """Job messages waiting in Redis (every priority list), after a PING."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
        names = [QUEUE, *(f"{QUEUE}:{step}" for step in range(1, PRIORITY_STEPS))]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        return sum(int(n) for n in pipe.execute())
    finally:
        client.close()


def broker_health(
    settings: GatewaySettings, engine: Engine, url: str, now: datetime
) -> tuple[PartHealth, Beat | None]:
    described = probes.describe_url(url)
    scheme = urlparse(url).scheme
    timeout = settings.web.probe_timeout_s
    started = time.monotonic()
    try:
        if scheme in ("redis", "rediss"):
            waiting = redis_messages_waiting(url, timeout)
            summary = f"answers; {waiting} job messages waiting"
            facts: tuple[tuple[str, str], ...] = (("messages waiting", str(waiting)),)
        elif scheme.startswith("sqla"):
            path = Path(urlparse(url.removeprefix("sqla+")).path)
            summary, facts = "embedded (SQLite file)", ()
            if not path.parent.exists():
                raise probes.ProbeError(f"expected the folder {path.parent}, found none")
        else:
            probes.check_broker(settings)
            summary, facts = "accepts connections", ()
    except (probes.ProbeError, redis.exceptions.RedisError, OSError) as exc:
        seen = last_seen(engine, PART).get(described)
        message = exc if isinstance(exc, probes.ProbeError) else f"{type(exc).__name__}: {exc}"

        return (
            PartHealth(
                PART,
                described,
                Level.RED,
                f"expected the broker at {described} to answer, found {message}",
                as_utc(seen) if seen else None,
            ),
            None,
        )
    elapsed = time.monotonic() - started
    level = Level.AMBER if elapsed > SLOW_S else Level.GREEN
    if level is Level.AMBER:
        summary += f" (slow: {elapsed * 1000:.0f} ms)"
    beat = Beat(described, PART, socket.gethostname(), 0, 0.0, {"scheme": scheme})
    return PartHealth(PART, described, level, summary, now, facts), beat
