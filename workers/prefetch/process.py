"""The prefetcher as a process of its own (the GIL: decoding beside the listener's threads
would slow ingest), in the idle CPU and disk scheduling classes so that ingest goes first (at
niceness 10 alone it slowed a 200-slice CT ingest by 27 %, median of 4 runs; idle: within
the noise). `serve` starts it beside itself (gateway/cli.py composes them: the gateway never
imports the workers), or it runs alone as `pacs-gateway prefetch` next to the listener, on
the same data directory."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from sqlalchemy import Engine, func, select

from gateway.database import make_engine
from gateway.logging_setup import configure_logging
from gateway.models import Instance
from gateway.settings import GatewaySettings
from workers.prefetch.prefetcher import Prefetcher

LOGGER = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0


def run_prefetcher(
    settings: GatewaySettings,
    stop: threading.Event,
    last_id: Any = None,
    parent: int | None = None,
) -> None:
    """The loop in this process until `stop` (or the parent process `parent` has gone);
    `last_id`, a shared value, tells others how far it got."""
    os.nice(settings.prefetch.nice)
    if settings.prefetch.idle_priority:
        # CPU and disk only when nothing else wants them (Linux): ingest and jobs go first
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
        except (AttributeError, OSError, psutil.Error) as exc:
            LOGGER.warning("prefetcher left at niceness only: %s", exc)
    engine = make_engine(settings)
    prefetcher = Prefetcher(settings, engine)
    LOGGER.info("prefetcher running (niceness %d)", os.nice(0))

    def alive() -> bool:
        if last_id is not None:
            last_id.value = prefetcher.last_id
        return parent is None or os.getppid() == parent

    try:
        prefetcher.run(stop, alive)
    finally:
        engine.dispose()


def run_prefetcher_forever(settings: GatewaySettings) -> int:
    """`pacs-gateway prefetch`: until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_prefetcher(settings, stop)
    return 0


def _child(settings_data: dict[str, Any], stop: Any, last_id: Any, parent: int) -> None:
    settings = GatewaySettings(**settings_data)
    configure_logging(settings.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it, after its own work
    halt = threading.Event()

    def _relay() -> None:
        stop.wait()
        halt.set()

    threading.Thread(target=_relay, daemon=True).start()
    run_prefetcher(settings, halt, last_id, parent)


class PrefetcherProcess:
    def __init__(self, settings: GatewaySettings) -> None:
        context = multiprocessing.get_context("spawn")  # the parent runs threads
        self._stop = context.Event()
        self.last_id = context.Value("q", -1, lock=False)
        self.process = context.Process(
            target=_child,
            args=(settings.model_dump(), self._stop, self.last_id, os.getpid()),
            name="prefetcher",
            daemon=True,
        )
        self.process.start()

    def stop(self) -> None:
        self._stop.set()
        self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def wait_caught_up(self, engine: Engine, timeout_s: float) -> None:
        """Until the loop has looked at every instance committed so far (benchmarks, tests)."""
        with engine.connect() as connection:
            newest = int(connection.execute(select(func.max(Instance.id))).scalar() or 0)
        deadline = time.monotonic() + timeout_s
        while self.last_id.value < newest:
            if time.monotonic() > deadline or not self.process.is_alive():
                raise TimeoutError(
                    f"expected the prefetcher at instance {newest} within {timeout_s:g} s, "
                    f"found it at {self.last_id.value}"
                )
            time.sleep(0.05)


def start_prefetcher(settings: GatewaySettings) -> PrefetcherProcess:
    return PrefetcherProcess(settings)


@contextmanager
def prefetching(settings: GatewaySettings) -> Iterator[PrefetcherProcess | None]:
    """The prefetcher beside the caller while the block runs, if `prefetch.enabled`."""
    if not settings.prefetch.enabled:
        yield None
        return
    process = start_prefetcher(settings)
    try:
        yield process
    finally:
        process.stop()
