"""A 2 GB STOW-RS body, sent chunked by a generator, is refused at the limit while the
server process (the real `pacs-gateway web`) grows by less than a fixed bound: the body is
streamed to staging files, never held. Nothing of it is stored and nothing is left behind."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import requests
from pydicom.uid import generate_uid

from gateway import migrate
from gateway.database import make_engine
from gateway.dicomweb.tokens import Scope, create_token
from tests.conftest import free_port, make_settings
from tests.dicom_samples import ct_instance
from tests.dicomweb.server import WebProcess, WebServer
from tests.dicomweb.stow_helpers import (
    file_bytes,
    request_events,
    spool_files,
    staging_files,
    stored_count,
    stow,
)

BODY_BYTES = 2 * 1024**3
LIMIT_MB = 256
RSS_BOUND_BYTES = 48 * 1024**2  # the body is 2 GB and the limit 256 MB: either would show
CHUNK = b"\0" * (1024 * 1024)


def tree_rss(pid: int) -> int:
    """The RSS of a process and all its descendants: `pacs-gateway web` is gunicorn's
    arbiter, and the application runs in its worker processes."""
    total = 0
    root = psutil.Process(pid)
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):  # ended since the listing
            total += process.memory_info().rss
    return total


class PeakRss:
    """The largest RSS of a process tree, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def two_gigabytes(sent: list[int]) -> Iterator[bytes]:
    """One part that claims to be DICOM and goes on for 2 GB."""
    yield b"--b\r\nContent-Type: application/dicom\r\n\r\n"
    for _ in range(BODY_BYTES // len(CHUNK)):
        sent[0] += len(CHUNK)
        yield CHUNK
    yield b"\r\n--b--\r\n"


def test_a_2gb_chunked_body_is_refused_within_a_fixed_memory_bound(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        http_port=free_port(),
        dicomweb={"max_stow_mb": LIMIT_MB},
        web={"session_cookie_secure": False},
    )
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    secret = create_token(engine, "BIGSENDER", Scope.BOTH, actor="test", source_address=None)
    server = WebProcess(settings, tmp_path)
    pid = server.start()
    web = WebServer(settings, engine, settings.http_port)
    try:
        # a first, ordinary request: what a STOW imports and caches is in the baseline
        warm = ct_instance(generate_uid(), generate_uid(), 0, rows=64, columns=64)
        assert stow(web, [file_bytes(warm)], secret).status == 200
        baseline = tree_rss(pid)
        assert len(psutil.Process(pid).children(recursive=True)) >= 1, "expected gunicorn workers"
        sent = [0]
        status = None
        with PeakRss(pid) as rss:
            try:
                reply = requests.post(
                    f"{web.dicomweb}/studies",
                    data=two_gigabytes(sent),
                    headers={
                        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
                        "Authorization": f"Bearer {secret}",
                    },
                    timeout=120,
                )
                status = reply.status_code
            except requests.ConnectionError:
                status = None
        growth = rss.peak - baseline
        assert growth < RSS_BOUND_BYTES, f"RSS grew {growth / 1024**2:.1f} MB"
        # gunicorn answers 413 with Connection: close and closes; requests (urllib3) reads
        # that answer when its send fails, rather than reporting a reset connection
        assert status == 413
        [event] = request_events(web, 413)
        assert event.detail["bytes"] == LIMIT_MB * 1024**2 + 1
        assert stored_count(web) == 1  # the warm-up only
        assert len(spool_files(web)) == 1 and staging_files(web) == []
        print(f"2 GB body: {sent[0] / 1024**2:.0f} MB sent, RSS +{growth / 1024**2:.1f} MB")
    finally:
        server.stop()
        engine.dispose()
