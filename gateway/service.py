"""Long-running parts of `pacs-gateway serve`: listener processes and study assembly.

One process is CPU-bound at a few hundred instances per second, so `listener_processes`
> 1 starts more processes on the same port (SO_REUSEPORT); the kernel spreads associations
over them. Study assembly runs once, in the main process.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from gateway.assembly import StudyAssembler
from gateway.database import make_engine
from gateway.dicom.listener import start_listener
from gateway.logging_setup import configure_logging
from gateway.migrate import alembic_config
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)


class DatabaseNotMigrated(Exception):
    pass


def check_schema_current(settings: GatewaySettings, engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise DatabaseNotMigrated(
            f"expected database schema revision {head}, found {current or 'none'}: "
            "run `pacs-gateway migrate` first"
        )


def _install_stop_signals(stop: threading.Event) -> None:
    def _handler(signum: int, _frame: Any) -> None:
        LOGGER.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def _listener_process(settings_data: dict[str, Any]) -> None:
    settings = GatewaySettings(**settings_data)
    configure_logging(settings.log_level)
    stop = threading.Event()
    _install_stop_signals(stop)
    listener = start_listener(settings, make_engine(settings), reuse_port=True)
    stop.wait()
    listener.stop()


def serve(
    settings: GatewaySettings,
    stop: threading.Event | None = None,
    on_ready: Callable[[list[int]], None] | None = None,
) -> None:
    """Run the listener(s) and the assembler until SIGTERM/SIGINT (or `stop` is set)."""
    engine = make_engine(settings)
    check_schema_current(settings, engine)
    if stop is None:
        stop = threading.Event()
        _install_stop_signals(stop)
    processes = settings.dicom.listener_processes
    children: list[Any] = []
    spawn = multiprocessing.get_context("spawn")
    # Spawned, not forked: this process already runs threads.
    for number in range(processes - 1):
        child = spawn.Process(
            target=_listener_process,
            args=(settings.model_dump(),),
            name=f"listener-{number + 1}",
            daemon=True,
        )
        child.start()
        children.append(child)
    listener = start_listener(settings, engine, reuse_port=processes > 1)
    assembler = StudyAssembler(engine, settings.assembly.quiet_period_s)
    assembly = threading.Thread(
        target=assembler.run,
        args=(stop, settings.assembly.poll_interval_s),
        name="study-assembly",
        daemon=True,
    )
    assembly.start()
    if on_ready is not None:
        on_ready(listener.ports)
    try:
        stop.wait()
    finally:
        listener.stop()
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=10)
        assembly.join(timeout=10)
        engine.dispose()
