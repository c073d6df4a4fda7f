"""The listener as real processes: `run` on a fresh data dir, several listener processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from sqlalchemy import Engine

from gateway.settings import GatewaySettings
from tests.conftest import REPO, GatewayProcess, free_port, wait_for_port
from tests.db_queries import instance_rows
from tests.dicom_samples import write_series
from tests.scu import association, send_files


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


def test_listener_processes_share_the_port(
    settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    several = settings.model_copy(
        update={"dicom": settings.dicom.model_copy(update={"listener_processes": 2})}
    )
    gateway = GatewayProcess(several, tmp_path)
    gateway.start()
    try:
        assert gateway.process is not None
        wait_until_children(gateway.process.pid, 1)
        senders: list[threading.Thread] = []
        results: list[list[int]] = []
        folders = [tmp_path / f"s{n}" for n in range(6)]
        for folder in folders:
            write_series(folder, 10)
        # Associations held open at once land on both processes (SO_REUSEPORT hashes by
        # source port); each still stores durably into the one database.
        for folder in folders:
            paths = sorted(folder.iterdir())
            thread = threading.Thread(
                target=lambda p=paths: results.append(send_files(several.dicom.port, p))
            )
            senders.append(thread)
            thread.start()
        for thread in senders:
            thread.join(timeout=60)
        assert results == [[0] * 10] * 6
        assert len(instance_rows(engine)) == 60
        with association(several.dicom.port) as assoc:
            assert assoc.send_c_echo().Status == 0
    finally:
        gateway.stop()
    assert gateway.process is not None and gateway.process.returncode == 0


def wait_until_children(pid: int, count: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = [
            c
            for c in psutil.Process(pid).children()
            if "multiprocessing" not in " ".join(c.cmdline())
            or "spawn_main" in " ".join(c.cmdline())
        ]
        listening = [
            c for c in children if any(conn.status == "LISTEN" for conn in c.net_connections())
        ]
        if len(listening) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"expected {count} listener child process(es), found fewer")
