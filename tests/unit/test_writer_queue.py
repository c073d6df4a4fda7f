"""The SQLite writer queue: writers of separate queues on one database exclude each other,
and a turn leaves no file descriptor behind (leaked ones pushed the test process past 1024
fds, where pynetdicom's select() fails and every new association aborts)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine

from gateway.database import writer_queue


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_turn_leaves_no_file_descriptor_open(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    with writer_queue(engine):
        pass
    before = _open_fds()
    for _ in range(200):
        with writer_queue(engine):
            pass
    assert _open_fds() - before <= 2, f"expected no fds left open, found {_open_fds() - before}"


def test_writers_of_separate_queues_take_turns(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    held = threading.Event()
    order: list[str] = []

    def first() -> None:
        with writer_queue(engine):
            held.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(5)
    started = time.monotonic()
    with writer_queue(engine):  # another queue of the same database: waits for the first
        order.append("second in")
        waited = time.monotonic() - started
    thread.join(5)
    assert order == ["first done", "second in"] and waited > 0.2, (order, waited)
