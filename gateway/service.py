"""Long-running parts of `pacs-gateway serve`: listener processes, study assembly, the
router that turns complete studies into jobs on the broker, and the delivery retry loop.

One process is CPU-bound at a few hundred instances per second, so `listener_processes`
> 1 starts that many listener processes; the main process accepts and hands connections to
them in turn (gateway/dicom/dispatch.py). Study assembly runs once, in the main process.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from gateway.assembly import StudyAssembler
from gateway.database import make_engine
from gateway.delivery.deliverer import Deliverer
from gateway.delivery.registry import seed_from_settings
from gateway.dicom.dispatch import READY, Acceptor, WorkerPool, receive_connections
from gateway.dicom.listener import Listener, listener_endpoints, start_listener
from gateway.health.listeners import listener_heartbeat
from gateway.jobs.router import StudyRouter
from gateway.logging_setup import configure_logging
from gateway.migrate import alembic_config
from gateway.pull.worker import PullWorker
from gateway.retention.purge import RetentionPass
from gateway.settings import GatewaySettings
from gateway.spool_hygiene import SpoolHygiene

LOGGER = logging.getLogger(__name__)
RELAY_WAIT_S = 0.5  # how soon the relay of listener processes' completions sees a stop


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


def _listener_worker(
    settings_data: dict[str, Any], study_completed: Any, channel: socket.socket
) -> None:
    """A listener process: serves the connections the main process hands over, and sets
    `study_completed` (a multiprocessing Event) when a completion signal completes a study."""
    settings = GatewaySettings(**settings_data)
    configure_logging(settings.log_level)
    stop = threading.Event()
    _install_stop_signals(stop)
    engine = make_engine(settings)
    listener = start_listener(settings, engine, bind=False, on_study_complete=study_completed.set)
    channel.sendall(READY)
    receiver = threading.Thread(
        target=receive_connections, args=(channel, listener.deliver), daemon=True
    )
    receiver.start()
    heartbeat = listener_heartbeat(settings, engine, listener, alive=receiver.is_alive).start(stop)
    while not stop.is_set() and receiver.is_alive():
        stop.wait(0.5)
    stop.set()  # also when the receiver ended first: the heartbeat's last write says so
    heartbeat.join(timeout=5)
    listener.stop()
    engine.dispose()


def _relay_completions(
    study_completed: Any, route_now: threading.Event, stop: threading.Event
) -> None:
    """A listener process completed a study: wake this process's router. Cleared before the
    router is woken, so a study completed meanwhile is seen by the pass this starts."""
    while not stop.is_set():
        if study_completed.wait(RELAY_WAIT_S):
            study_completed.clear()
            route_now.set()


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
    listener: Listener | None = None
    pool: WorkerPool | None = None
    acceptor: Acceptor | None = None
    threads: list[threading.Thread] = []
    # set when a study is complete (a listener on a completion signal, the assembler on a
    # signal or a quiet period): the router routes it at once, not at its next poll
    route_now = threading.Event()
    if processes == 1:
        listener = start_listener(settings, engine, on_study_complete=route_now.set)
        ports = listener.ports
        threads.append(listener_heartbeat(settings, engine, listener).thread(stop))
    else:
        study_completed = multiprocessing.get_context("spawn").Event()
        pool = WorkerPool(_listener_worker, (settings.model_dump(), study_completed), processes)
        threads.append(
            threading.Thread(
                target=_relay_completions,
                args=(study_completed, route_now, stop),
                name="completion-relay",
            )
        )
        endpoints = {
            name: (settings.dicom.host, port)
            for name, port in listener_endpoints(settings.dicom).items()
        }
        acceptor = Acceptor(endpoints, pool)
        ports = acceptor.ports
        threads.append(threading.Thread(target=acceptor.run, args=(stop,), name="acceptor"))
        LOGGER.info(
            "DICOM listener %s on %s ports %s, %d processes",
            settings.dicom.ae_title,
            settings.dicom.host,
            ports,
            processes,
        )
    assembler = StudyAssembler(
        engine, settings.assembly.quiet_period_s, on_study_complete=route_now.set
    )
    threads.append(
        threading.Thread(
            target=assembler.run,
            args=(stop, settings.assembly.poll_interval_s),
            name="study-assembly",
        )
    )
    # Beside assembly (once per gateway): orphan spool files of a failed commit.
    # And retention (storage.retention_days), on the same beat.
    hygiene = SpoolHygiene(settings, engine)
    retention = None
    if settings.storage.retention_days is not None:
        retention = RetentionPass(settings, engine)
    threads.append(
        threading.Thread(
            target=hygiene.run,
            args=(stop,),
            kwargs={"retention": retention},
            name="spool-hygiene",
        )
    )
    # Imported here: the spawned listener processes import this module and need no Celery.
    from gateway.queue.app import make_celery, send_job

    celery = make_celery(settings)
    router = StudyRouter(
        settings, engine, lambda job_id, priority: send_job(celery, job_id, priority)
    )
    router.seed()
    seed_from_settings(engine, settings.destinations)
    threads.append(threading.Thread(target=router.run, args=(stop, route_now), name="router"))
    # Always: destinations may be added in the admin UI while the gateway runs.
    deliverer = Deliverer(settings, engine)
    threads.append(threading.Thread(target=deliverer.run, args=(stop,), name="delivery"))
    for thread in threads:
        thread.daemon = True
        thread.start()
    if settings.pull.source is not None:  # pull runs from the UI and API, and priors
        threads += PullWorker(settings, engine).start(stop)
    if on_ready is not None:
        on_ready(ports)
    try:
        stop.wait()
    finally:
        route_now.set()  # the router sees the stop now, not at its next poll
        if listener is not None:
            listener.stop()
        for thread in threads:
            thread.join(timeout=10)
        if acceptor is not None:
            acceptor.close()
        if pool is not None:
            pool.stop()
        engine.dispose()
