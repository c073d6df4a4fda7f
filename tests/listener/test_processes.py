"""The listener as real processes: `run` on a fresh data dir, several listener processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
from sqlalchemy import Engine

from gateway.settings import GatewaySettings
from tests.conftest import REPO, GatewayProcess, free_port, wait_for_port
from tests.db_queries import instance_rows
from tests.dicom_samples import write_series
from tests.scu import association, raw_file_sending, send_files


def test_run_migrates_a_fresh_data_dir_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PACS_GATEWAY_DICOM__ALLOWED_PEERS": json.dumps([{"ae_title": "*", "host": "127.0.0.1"}]),
        "PACS_GATEWAY_STORAGE__MIN_FREE_MB": "0",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--data-dir",
            str(tmp_path / "data"),
            "--dicom-port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, 30)
        paths = write_series(tmp_path / "series", 3)
        assert send_files(port, paths) == [0, 0, 0]
        assert (tmp_path / "data" / "gateway.db").is_file()
        assert len(list((tmp_path / "data" / "spool").rglob("*.dcm"))) == 3
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    assert process.returncode == 0, output  # SIGTERM is a clean stop


def test_listener_processes_share_associations_evenly(
    settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    several = settings.model_copy(
        update={"dicom": settings.dicom.model_copy(update={"listener_processes": 2})}
    )
    gateway = GatewayProcess(several, tmp_path)
    gateway.start()
    port = several.dicom.port
    try:
        assert gateway.process is not None
        folders = [tmp_path / f"s{n}" for n in range(4)]
        series = [write_series(folder, 10) for folder in folders]
        with ExitStack() as stack:
            held = [stack.enter_context(association(port, paths)) for paths in series]
            assert all(assoc.is_established for assoc in held)
            # Four associations at once: two in each listener process.
            per_child = connections_per_child(gateway.process.pid, port)
            assert sorted(per_child.values()) == [2, 2], per_child
            with raw_file_sending():
                statuses = [
                    [assoc.send_c_store(path).Status for path in paths]
                    for assoc, paths in zip(held, series, strict=True)
                ]
        assert statuses == [[0] * 10] * 4
        assert len(instance_rows(engine)) == 40
        # A listener process that dies is replaced; the port keeps serving.
        victim = next(iter(per_child))
        psutil.Process(victim).kill()
        for _ in range(3):
            assert send_files(port, series[0][:1]) == [0]
    finally:
        gateway.stop()
    assert gateway.process is not None and gateway.process.returncode == 0


def connections_per_child(pid: int, port: int) -> dict[int, int]:
    """Established connections to our DICOM port held by each listener process (a child
    that holds a socket on the port: not the prefetcher or multiprocessing's helpers)."""
    deadline = time.monotonic() + 10
    counts: dict[int, int] = {}
    while time.monotonic() < deadline:
        counts = {}
        for child in psutil.Process(pid).children():
            on_port = [
                conn
                for conn in child.net_connections(kind="tcp")
                if conn.laddr and conn.laddr.port == port
            ]
            if on_port:
                counts[child.pid] = sum(1 for conn in on_port if conn.status == "ESTABLISHED")
        if sum(counts.values()) >= 4:
            break
        time.sleep(0.1)
    return counts
