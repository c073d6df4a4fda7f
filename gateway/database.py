"""Engine construction: SQLite (embedded default) or PostgreSQL, from the settings."""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from gateway.settings import GatewaySettings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; FULL makes every commit durable (fsync).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails
    # with SQLITE_BUSY (no wait) when another process committed in between.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(settings: GatewaySettings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,  # parameters are UIDs and descriptions: keep them out of logs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
    )


class WriterQueue:
    """Makes SQLite writers wait their turn in the kernel instead of in SQLite's busy loop.

    SQLite allows one writer at a time and makes the others sleep and retry (1, 2, 5, 10 ...
    ms). With several associations committing hundreds of instances per second that polling
    cost more than the commits (measured: about 30 % of the C-STORE handler's time with four
    associations). A thread lock plus an exclusive `flock` on a file beside the database
    queue the writers of this process and of the other listener processes; a waiter wakes as
    soon as the lock is free. PostgreSQL needs none of this.
    """

    def __init__(self, lock_file: Path | None) -> None:
        self._lock_file = lock_file
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> WriterQueue:
        self._thread_lock.acquire()
        if self._lock_file is not None:
            try:
                # Opened per turn and closed after it: `writer_queue` is called per
                # transaction in many places, and an fd kept per call leaked until the
                # process passed 1024 fds, where select() (pynetdicom) fails. flock is held
                # per open file, so two turns of one process still exclude each other.
                self._fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o640)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._close()
                self._thread_lock.release()
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._close()  # closing the file releases its flock
        finally:
            self._thread_lock.release()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def writer_queue(engine: Engine) -> AbstractContextManager[object]:
    """A WriterQueue for a file-backed SQLite database, else a no-op."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return nullcontext()
    return WriterQueue(Path(f"{database}.writer-lock"))


def insert_ignoring_duplicates(
    connection: Connection, table: Any, unique_columns: list[str]
) -> Any:
    """INSERT ... ON CONFLICT (unique_columns) DO NOTHING in the connection's dialect: rows
    that several processes may add at the same moment (seeds, jobs, deliveries)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=unique_columns)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=unique_columns)
    raise RuntimeError(f"expected a postgresql or sqlite database, found {dialect}")
