"""Scale-out on one machine, real parts: two listener processes (`pacs-gateway serve`) sharing
one spool and one PostgreSQL database, each taking two of four concurrent senders (DCMTK
storescu); Redis as the broker; two Celery workers named as on two hosts; two Triton servers
listed in `inference.triton_grpc_urls`; a PACS that counts every C-STORE. 20 small CT
studies. Once the second Triton has served inferences it is killed (SIGKILL, with its
backend processes) while jobs still run.

Proven: jobs ran on both workers (job.started names the worker), inferences reached both
Triton servers before the kill, the health grid then shows the dead server amber and the
other green, and the PACS received exactly one SEG and one SR C-STORE per study: 20 and 20,
nothing lost, nothing doubled; and no job was retried for an inference error: the studies
whose calls met the dead server were carried across by the runner's failover within the
call, not by the job queue's retries."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pydicom
import pytest
from sqlalchemy import Engine, select

from gateway.audit import utcnow
from gateway.health.status import Level
from gateway.health.triton import triton_health
from gateway.models import AuditEvent, Instance, JobState
from gateway.settings import GatewaySettings
from tests.conftest import GATEWAY_AE, _postgres_url, _reset_postgres, free_port, wait_for_port
from tests.inference.conftest import start_triton
from tests.integration.dcmtk import storescu
from tests.pipeline.conftest import phantom_study, pipeline_settings
from tests.pipeline.harness import Process, RedisServer, jobs, settled, wait_until
from tests.scaling.counting_pacs import CountingPacs, counting_pacs
from workers.triton_server import TritonServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STUDIES = 20
SENDERS = 4
WORKERS = ("worker1@hostA", "worker2@hostB")
SHAPE = (12, 128, 128)  # slices, rows, columns: small, as tests/pipeline/test_faults.py


@pytest.fixture
def database_url() -> str:
    """PostgreSQL: several hosts share one database (SQLite's writer queue is per process)."""
    url = _postgres_url()
    _reset_postgres(url)
    return url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tritons(tmp_path: Path) -> Iterator[list[TritonServer]]:
    """Two Triton servers on their own ports, started side by side."""
    folders = [tmp_path / "triton-a", tmp_path / "triton-b"]
    for folder in folders:
        folder.mkdir()
    with ThreadPoolExecutor(2) as pool:
        servers = list(pool.map(start_triton, folders))
    yield servers
    for server in servers:
        server.stop()


def inference_successes(server: TritonServer) -> int:
    """nv_inference_request_success summed over the server's models (its metrics endpoint)."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found = re.findall(r"^nv_inference_request_success\{[^}]*\} (\d+(?:\.\d+)?)$", text, re.M)
    return int(sum(float(n) for n in found))


def kill_group(server: TritonServer) -> None:
    """SIGKILL tritonserver and its Python backend stubs: a host lost, no graceful unload."""
    assert server.pid is not None
    os.killpg(server.pid, signal.SIGKILL)
    wait_until(lambda: not server.is_running(), 10, "tritonserver to die")


class PeakMemory:
    """Peak resident memory (RSS, summed over each process tree) of each role, sampled."""

    def __init__(self) -> None:
        self.roles: dict[str, list[int]] = {}
        self.peak_mib: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, role: str, pid: int | None) -> None:
        assert pid is not None
        self.roles.setdefault(role, []).append(pid)

    def _tree_rss(self, pid: int) -> int:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for role, pids in self.roles.items():
                for pid in pids:
                    mib = self._tree_rss(pid) / 2**20
                    self.peak_mib[role] = max(self.peak_mib.get(role, 0.0), mib)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def inference_retries(engine: Engine) -> list[str]:
    """Reasons of job retries that came from Triton (a job also waits, by a retry, for a
    delivery that a listener's deliverer has claimed: not counted)."""
    with engine.connect() as connection:
        details = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.kind == "job.retry")
        ).scalars()
        reasons = [str(d.get("reason", "")) for d in details]
    return [r for r in reasons if "triton" in r.lower() or "inference" in r.lower()]


def starts_of_each_job(engine: Engine) -> dict[int, list[tuple[str, str]]]:
    """Job ID -> (worker, task message ID) of each of its job.started events, in order."""
    with engine.connect() as connection:
        details = connection.execute(
            select(AuditEvent.detail)
            .where(AuditEvent.kind == "job.started")
            .order_by(AuditEvent.id)
        ).scalars()
        out: dict[int, list[tuple[str, str]]] = {}
        for d in details:
            out.setdefault(int(d["job"]), []).append((str(d["worker"]), str(d["task"])))
    return out


def scale_out_settings(
    settings: GatewaySettings, redis: RedisServer, tritons: list[TritonServer], pacs: CountingPacs
) -> GatewaySettings:
    return pipeline_settings(
        settings,
        redis.url,
        tritons[0].grpc_url,
        [pacs.destination()],
        inference={
            "triton_grpc_urls": [t.grpc_url for t in tritons],
            "triton_failover_cooldown_s": 5,
            "deadline_s": 90,
            "request_timeout_s": 30,
        },
        queue={"max_retries": 5},
        assembly={"quiet_period_s": 2.0, "poll_interval_s": 0.3},
    )


def start_processes(
    settings: GatewaySettings, tmp_path: Path, memory: PeakMemory
) -> tuple[list[Process], list[Process], list[int]]:
    """Two listeners on their own DICOM ports (one spool, one database) and two workers with
    their own Celery node names."""
    listeners, ports = [], []
    for name in ("listener1", "listener2"):
        port = free_port()
        own = settings.model_copy(
            update={"dicom": settings.dicom.model_copy(update={"port": port})}
        )
        listeners.append(Process("serve", own, tmp_path / f"{name}.log").start())
        ports.append(port)
    workers = []
    for hostname in WORKERS:
        own = settings.model_copy(
            update={"queue": settings.queue.model_copy(update={"worker_hostname": hostname})}
        )
        workers.append(Process("worker", own, tmp_path / f"{hostname}.log").start())
    for port in ports:
        wait_for_port(port, 60)
    for process in listeners:
        memory.watch("listener", process.process.pid if process.process else None)
    for process in workers:
        memory.watch("worker", process.process.pid if process.process else None)
    return listeners, workers, ports


def send_all(ports: list[int], studies: list[list[Path]]) -> None:
    """Four senders at once, each with its share of the studies on its own association;
    senders 1 and 2 to the first listener, 3 and 4 to the second."""

    def sender(k: int) -> None:
        paths = [p for study in studies[k::SENDERS] for p in study]
        result = storescu(
            ports[k * len(ports) // SENDERS], paths, calling=f"SENDER{k + 1}", called=GATEWAY_AE
        )
        assert result.ok, result.output[-2000:]

    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(sender, range(SENDERS)))


def test_two_listeners_two_workers_two_tritons_one_killed(
    settings: GatewaySettings,
    engine: Engine,
    redis_server: RedisServer,
    tritons: list[TritonServer],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    studies = [
        phantom_study(tmp_path / f"ct{i}", seed=8100 + i, shape=SHAPE)[1] for i in range(STUDIES)
    ]
    study_uids = {
        str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
        for paths in studies
    }
    processes: list[Process] = []
    with counting_pacs() as pacs, PeakMemory() as memory:
        for server in tritons:
            memory.watch("triton", server.pid)
        configured = scale_out_settings(settings, redis_server, tritons, pacs)
        web = Process(
            "web", configured.model_copy(update={"http_port": free_port()}), tmp_path / "web.log"
        ).start()
        processes.append(web)
        memory.watch("web", web.process.pid if web.process else None)
        try:
            listeners, workers, ports = start_processes(configured, tmp_path, memory)
            processes += listeners + workers
            send_all(ports, studies)

            def logs() -> str:
                return "\n".join(f"--- {p.log.name}\n{p.log_tail()}" for p in processes)

            # Kill the second Triton once it has served inferences, while studies remain.
            doomed, survivor = tritons[1], tritons[0]
            try:
                wait_until(lambda: inference_successes(doomed) >= 4, 120, "inferences on Triton 2")
            except AssertionError:
                pytest.fail(f"no inferences on the second Triton\n{logs()}")
            before = {t.grpc_url: inference_successes(t) for t in tritons}
            delivered_at_kill = sum(j.state == JobState.DELIVERED for j in jobs(engine))
            kill_group(doomed)
            assert delivered_at_kill < STUDIES - 4, (
                f"expected the kill while studies remain, found {delivered_at_kill} of "
                f"{STUDIES} delivered already"
            )
            grid, _ = triton_health(configured, engine, utcnow())
            levels = {row.name: row.level for row in grid if row.part == "triton"}
            assert levels == {survivor.grpc_url: Level.GREEN, doomed.grpc_url: Level.AMBER}

            try:
                wait_until(
                    lambda: len(jobs(engine)) == STUDIES and settled(engine, redis_server),
                    150,
                    "every job finished and nothing left to deliver",
                )
            except AssertionError:
                states = [(j.id, j.state.value, j.attempts, j.last_error) for j in jobs(engine)]
                pytest.fail(f"jobs {states}\n{logs()}")
            after_survivor = inference_successes(survivor)
            rss = dict(memory.peak_mib)
        finally:
            for process in processes:
                process.stop()

    finished = jobs(engine)
    failed = [(j.id, j.last_error) for j in finished if j.state != JobState.DELIVERED]
    assert not failed, f"expected every job delivered, found failed: {failed}"
    assert len(finished) == STUDIES
    with engine.connect() as connection:
        stored = connection.execute(select(Instance.id)).all()
    assert len(stored) == STUDIES * SHAPE[0]

    retried = inference_retries(engine)
    assert not retried, f"expected failover within each call, found job retries: {retried}"
    starts = starts_of_each_job(engine)
    # A retry runs the same task message again; a second message (two routers sent the
    # job) has its own ID, and its copy may run beside the first on the other worker.
    sent_twice = {j: s for j, s in starts.items() if len({task for _, task in s}) != 1}
    assert not sent_twice, f"expected one task message per job, found {sent_twice}"
    by_worker = Counter(s[0][0] for s in starts.values())
    assert set(by_worker) == set(WORKERS), f"expected jobs on both workers, found {by_worker}"
    assert all(before[t.grpc_url] > 0 for t in tritons), before
    assert after_survivor > before[tritons[0].grpc_url], "the survivor took no work after"

    received = pacs.received()
    assert set(received) == study_uids, (
        f"expected results of {len(study_uids)} studies, found {len(received)}"
    )
    wrong = {s: dict(c) for s, c in received.items() if c != {"SEG": 1, "SR": 1}}
    assert not wrong, f"expected one SEG and one SR C-STORE per study, found {wrong}"
    totals = Counter(kind for c in received.values() for kind in c.elements())
    assert totals == {"SEG": STUDIES, "SR": STUDIES}, totals

    figures = {
        "runtime_s": round(time.monotonic() - started, 1),
        "jobs_by_worker": dict(by_worker),
        "inferences_before_kill": before,
        "inferences_on_survivor_at_end": after_survivor,
        "delivered_at_kill": delivered_at_kill,
        "peak_rss_mib_per_role_process_tree": {k: round(v) for k, v in rss.items()},
    }
    print("\nscale-out figures: " + json.dumps(figures))
