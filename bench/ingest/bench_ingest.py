"""Ingest benchmark: DCMTK storescu sends a CT study to the gateway, storescp and Orthanc.

Everything runs on this machine in one run, so the numbers are comparable with each other
(the machine is shared; compare ratios, not absolute figures across runs). Each measurement
starts a fresh receiver on a fresh temp dir, sends the whole study with `storescu` (wall time
of storescu, association set-up included), checks that the receiver really stored every
instance, and reads the receiver's peak RSS (VmHWM, summed over its processes) and CPU time.

    .venv/bin/python bench/ingest/bench_ingest.py              # 3 runs, 200 slices
    .venv/bin/python bench/ingest/bench_ingest.py --quick      # 1 run smoke test

Scenarios (the sender is always storescu, one association unless stated):
  c1  sender TCP_NODELAY=1, receivers TCP_NODELAY=1 where they honour it (storescp, Orthanc)
  c2  sender TCP_NODELAY=1, receivers at their defaults
  c3  sender at its default (Nagle on), receivers at their defaults: most modalities and PACS
  qa  the gateway with dicom.tcp_quickack = false, default sender (the c3 case without it)
  mp  k storescu processes in parallel, each sending a part of the study, to the gateway with
      dicom.listener_processes = 1 or 2 (one acceptor hands associations to the processes)
The gateway runs from a snapshot of its code (`gateway/`, `migrations/`) taken when the run
starts (`--gateway-src`: the working tree, or a git ref), on PYTHONPATH: edits made to the
working tree while the benchmark runs do not change what is measured.
The gateway never reads TCP_NODELAY (it always sets it on accepted sockets), so its c1 and c2
configurations are identical; both are measured anyway.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from make_ct_study import make_study  # noqa: E402

VENV_BIN = Path(sys.executable).parent
GATEWAY_AE = "PACSGATEWAY"
STORESCP_AE = "STORESCP"
ORTHANC_AE = "ORTHANC"
SENDER_AE = "BENCHSCU"
ORTHANC_BIN = "/usr/sbin/Orthanc"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0

# Targets from the issue.
TARGET_CT_DEFAULT_SENDER = 150.0
TARGET_SMALL_DEFAULT_SENDER = 300.0


# Helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_sockets(port: int) -> int:
    """How many sockets LISTEN on `port` (one per SO_REUSEPORT process), without connecting."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError), open(table) as handle:
            next(handle)
            for line in handle:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def base_environment() -> dict[str, str]:
    """This process's environment without anything that would change a tool's behaviour."""
    return {
        key: value
        for key, value in os.environ.items()
        if key != "TCP_NODELAY" and not key.startswith("PACS_GATEWAY_")
    }


def tool_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def peak_rss_bytes(processes: list[psutil.Process]) -> int:
    total = 0
    for proc in processes:
        with suppress(OSError), open(f"/proc/{proc.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """User + system CPU seconds of each process, by pid."""
    used = {}
    for proc in processes:
        with suppress(psutil.Error):
            times = proc.cpu_times()
            used[proc.pid] = times.user + times.system
    return used


def stop_process(proc: subprocess.Popen[bytes], *, group: bool) -> None:
    """SIGTERM (to the process group we created, if `group`), then SIGKILL after a while."""
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
    if group:  # children that outlived the leader (they share its process group id)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# Receivers -----------------------------------------------------------------------------


class Receiver:
    """A DICOM Storage SCP under test, started fresh in its own directory."""

    name = "receiver"
    ae_title = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"
        self.expected_listeners = 1

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return base_environment()

    def prepare(self) -> None:
        """Create directories and config files before the start."""

    def ready(self) -> bool:
        return listening_sockets(self.port) >= self.expected_listeners

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self.environment(),
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} at start; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready in {START_TIMEOUT_S}s ({self.log_path})")
            time.sleep(0.05)
        time.sleep(0.2)  # let the accept loop settle

    def processes(self) -> list[psutil.Process]:
        return process_tree(self.proc.pid) if self.proc is not None else []

    def stored_count(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)


class GatewayReceiver(Receiver):
    name = "gateway"
    ae_title = GATEWAY_AE

    def __init__(
        self,
        workdir: Path,
        template_data: Path,
        code: Path,
        *,
        listener_processes: int = 1,
        tcp_quickack: bool = True,
        fsync: bool = True,
    ) -> None:
        super().__init__(workdir)
        self.fsync = fsync
        self.data_dir = workdir / "data"
        self.template_data = template_data
        self.code = code
        self.listener_processes = listener_processes
        self.tcp_quickack = tcp_quickack
        # One process listens and hands connections to the listener processes.
        self.expected_listeners = 1

    def environment(self) -> dict[str, str]:
        return gateway_environment(
            self.code,
            self.data_dir,
            self.port,
            listener_processes=self.listener_processes,
            tcp_quickack=self.tcp_quickack,
            fsync=self.fsync,
        )

    def prepare(self) -> None:
        # `pacs-gateway migrate` ran once into the template; a copy is the same database.
        shutil.copytree(self.template_data, self.data_dir)

    def command(self) -> list[str]:
        return gateway_command("serve")

    def stored_count(self) -> int:
        uri = f"file:{self.data_dir / 'gateway.db'}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=30) as connection:
            (rows,) = connection.execute("SELECT count(*) FROM instances").fetchone()
        files = sum(1 for _ in (self.data_dir / "spool").rglob("*.dcm"))
        return int(rows) if files == rows else -abs(int(rows) - files)


def gateway_command(subcommand: str) -> list[str]:
    """`pacs-gateway <subcommand>`, importing the package from PYTHONPATH (the snapshot)."""
    return [sys.executable, "-m", "gateway.cli", subcommand]


def gateway_environment(
    code: Path,
    data_dir: Path,
    port: int,
    *,
    listener_processes: int = 1,
    tcp_quickack: bool = True,
    fsync: bool = True,
) -> dict[str, str]:
    env = base_environment()
    # Before the editable install's finder, which comes after the path entries.
    env["PYTHONPATH"] = str(code)
    env["PACS_GATEWAY_DATA_DIR"] = str(data_dir)
    env["PACS_GATEWAY_HTTP_PORT"] = str(free_port())
    env["PACS_GATEWAY_DICOM"] = json.dumps(
        {
            "ae_title": GATEWAY_AE,
            "host": "127.0.0.1",
            "port": port,
            "allowed_peers": [{"ae_title": "*", "host": "127.0.0.1"}],
            "listener_processes": listener_processes,
            "tcp_quickack": tcp_quickack,
        }
    )
    env["PACS_GATEWAY_STORAGE"] = json.dumps({"min_free_mb": 0, "fsync": fsync})
    # The receiver alone: `serve` may also run the prefetcher (decoding series as they
    # arrive, its own process), which is not ingest and which Orthanc does not do.
    env["PACS_GATEWAY_PREFETCH"] = json.dumps({"enabled": False})
    return env


class StorescpReceiver(Receiver):
    name = "storescp"
    ae_title = STORESCP_AE

    def __init__(self, workdir: Path, *, nodelay: bool) -> None:
        super().__init__(workdir)
        self.nodelay = nodelay
        self.out_dir = workdir / "out"

    def environment(self) -> dict[str, str]:
        env = base_environment()
        if self.nodelay:
            env["TCP_NODELAY"] = "1"
        return env

    def prepare(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return ["storescp", "-aet", STORESCP_AE, "-od", str(self.out_dir), str(self.port)]

    def stored_count(self) -> int:
        return sum(1 for path in self.out_dir.iterdir() if path.is_file())


class OrthancReceiver(Receiver):
    name = "orthanc"
    ae_title = ORTHANC_AE

    def __init__(self, workdir: Path, *, nodelay: bool) -> None:
        super().__init__(workdir)
        self.nodelay = nodelay
        self.http_port = free_port()
        self.config = workdir / "orthanc.json"

    def environment(self) -> dict[str, str]:
        env = base_environment()
        if self.nodelay:
            env["TCP_NODELAY"] = "1"
        return env

    def prepare(self) -> None:
        config = {
            "Name": "bench-ingest",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,  # accept C-STORE from any AE
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
        }
        self.config.write_text(json.dumps(config, indent=2))

    def command(self) -> list[str]:
        return [ORTHANC_BIN, str(self.config)]

    def _get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        if listening_sockets(self.port) < 1:
            return False
        try:
            self._get("/system")
        except OSError:
            return False
        return True

    def stored_count(self) -> int:
        return int(self._get("/statistics")["CountInstances"])


# Sending -------------------------------------------------------------------------------


@dataclass
class Measurement:
    scenario: str
    study: str
    receiver: str
    run: int
    instances: int
    bytes: int
    wall_s: float
    stored: int
    ok: bool
    peak_rss_bytes: int
    receiver_cpu_s: float
    receiver_processes: int
    receiver_cpu_by_process: list[float]
    senders: int
    sender_nodelay: bool
    receiver_nodelay: bool
    options: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def instances_per_s(self) -> float:
        return self.instances / self.wall_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s


def chunks(items: list[Path], parts: int) -> list[list[Path]]:
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def send(
    files: list[Path], receiver: Receiver, *, nodelay: bool, senders: int, timeout_s: float
) -> tuple[float, list[str]]:
    """Run `senders` storescu processes in parallel over parts of `files`; wall time of all."""
    env = base_environment()
    if nodelay:
        env["TCP_NODELAY"] = "1"
    procs: list[subprocess.Popen[str]] = []
    errors: list[str] = []
    start = time.perf_counter()
    try:
        for part in chunks(files, senders):
            procs.append(
                subprocess.Popen(
                    [
                        "storescu",
                        "-aet",
                        SENDER_AE,
                        "-aec",
                        receiver.ae_title,
                        "127.0.0.1",
                        str(receiver.port),
                        *map(str, part),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                    env=env,
                )
            )
        deadline = start + timeout_s
        outputs = []
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
            outputs.append((proc.returncode, out))
        wall = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
    for returncode, out in outputs:
        lines = out.splitlines()
        flagged = [line for line in lines if line.startswith(("E:", "F:"))]
        if returncode != 0:
            errors.append(f"storescu exit {returncode}")
            flagged = flagged or lines[-3:]  # what it said last, when nothing was flagged
        errors.extend(flagged)
    return wall, errors[:20]


def measure(
    receiver: Receiver,
    files: list[Path],
    *,
    scenario: str,
    study: str,
    run: int,
    sender_nodelay: bool,
    receiver_nodelay: bool,
    senders: int = 1,
    options: dict[str, Any] | None = None,
    timeout_s: float,
) -> Measurement:
    total_bytes = sum(path.stat().st_size for path in files)
    try:
        receiver.start()
        before = cpu_seconds(receiver.processes())
        wall, errors = send(
            files, receiver, nodelay=sender_nodelay, senders=senders, timeout_s=timeout_s
        )
        processes = receiver.processes()
        after = cpu_seconds(processes)
        by_process = sorted(
            (round(after[pid] - before.get(pid, 0.0), 2) for pid in after), reverse=True
        )
        used_cpu = sum(by_process)
        peak = peak_rss_bytes(processes)
        stored = receiver.stored_count()
    finally:
        receiver.stop()
    result = Measurement(
        scenario=scenario,
        study=study,
        receiver=receiver.name,
        run=run,
        instances=len(files),
        bytes=total_bytes,
        wall_s=wall,
        stored=stored,
        ok=stored == len(files) and not errors,
        peak_rss_bytes=peak,
        receiver_cpu_s=used_cpu,
        receiver_processes=len(processes),
        receiver_cpu_by_process=by_process,
        senders=senders,
        sender_nodelay=sender_nodelay,
        receiver_nodelay=receiver_nodelay,
        options=options or {},
        errors=errors,
    )
    flag = "ok" if result.ok else f"FAILED stored={stored} {errors[:3]}"
    print(
        f"  run {run} {scenario:<3} {study:<5} {receiver.name:<8} {options or ''} "
        f"{result.instances_per_s:8.1f} inst/s {result.mb_per_s:7.1f} MB/s "
        f"rss {peak / 2**20:6.0f} MiB cpu {used_cpu:5.1f}s {by_process} {flag}",
        flush=True,
    )
    return result


# The plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    scenario: str
    study: str  # "ct" or "small"
    receiver: str  # "gateway", "storescp", "orthanc"
    sender_nodelay: bool
    receiver_nodelay: bool
    senders: int = 1
    listener_processes: int = 1
    tcp_quickack: bool = True
    fsync: bool = True

    @property
    def key(self) -> str:
        extra = ""
        if self.receiver == "gateway":
            extra = f" lp={self.listener_processes} qa={int(self.tcp_quickack)}"
            extra += "" if self.fsync else " fsync=0"
        return f"{self.scenario} {self.study} {self.receiver}{extra} x{self.senders}"


def plan(parallel: list[int]) -> list[Case]:
    cases: list[Case] = []
    peers = ("gateway", "storescp", "orthanc")
    for study in ("ct", "small"):
        cases += [Case("c1", study, r, sender_nodelay=True, receiver_nodelay=True) for r in peers]
    cases += [Case("c2", "ct", r, sender_nodelay=True, receiver_nodelay=False) for r in peers]
    for study in ("ct", "small"):
        cases += [Case("c3", study, r, sender_nodelay=False, receiver_nodelay=False) for r in peers]
        cases.append(Case("qa", study, "gateway", False, False, tcp_quickack=False))
    for senders in parallel:
        for processes in (1, 2):
            cases.append(
                Case(
                    "mp",
                    "ct",
                    "gateway",
                    sender_nodelay=True,
                    receiver_nodelay=False,
                    senders=senders,
                    listener_processes=processes,
                )
            )
    for study in ("ct", "small"):
        cases.append(Case("dx", study, "gateway", True, False, fsync=False))
    return cases


def make_receiver(case: Case, workdir: Path, template: Path, code: Path) -> Receiver:
    if case.receiver == "gateway":
        return GatewayReceiver(
            workdir,
            template,
            code,
            listener_processes=case.listener_processes,
            tcp_quickack=case.tcp_quickack,
            fsync=case.fsync,
        )
    if case.receiver == "storescp":
        return StorescpReceiver(workdir, nodelay=case.receiver_nodelay)
    return OrthancReceiver(workdir, nodelay=case.receiver_nodelay)


def snapshot_gateway(workdir: Path, source: str) -> tuple[Path, dict[str, Any]]:
    """Copy the gateway's code (working tree, or a git ref) so that the run measures one
    version of it, whatever is edited meanwhile. Returns the folder and a description."""
    code = workdir / "gateway-code"
    code.mkdir()
    parts = ["gateway", "migrations"]
    if source == "worktree":
        for part in parts:
            shutil.copytree(
                REPO / part, code / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
    else:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", source, *parts],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True, timeout=60)
    digest = hashlib.sha256()
    for path in sorted(code.rglob("*.py")):
        digest.update(str(path.relative_to(code)).encode() + b"\0" + path.read_bytes())
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--", *parts], capture_output=True, text=True, timeout=30
    )
    described = {
        "source": source,
        "head": head.stdout.strip(),
        "modified_in_worktree": status.stdout.split("\n") if source == "worktree" else [],
        "sha256_of_py_files": digest.hexdigest()[:16],
    }
    described["modified_in_worktree"] = [
        line.strip() for line in described["modified_in_worktree"] if line.strip()
    ]
    return code, described


def migrate_template(workdir: Path, code: Path) -> Path:
    data = workdir / "template-data"
    env = gateway_environment(code, data, free_port())
    subprocess.run(
        gateway_command("migrate"),
        env=env,
        cwd=workdir,
        check=True,
        timeout=180,
        capture_output=True,
    )
    return data


# Reporting -----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import pydicom
    import pynetdicom

    cpu = "unknown"
    with suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "nproc_command": tool_version(["nproc"]),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "storescu": tool_version(["storescu", "--version"]).strip("$ ").replace("dcmtk: ", ""),
        "orthanc": tool_version([ORTHANC_BIN, "--version"]),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "loadavg_start": os.getloadavg(),
    }


def summarise(results: list[Measurement]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Measurement]] = {}
    for m in results:
        key = case_key(m)
        groups.setdefault(key, []).append(m)
    summary = {}
    for key, measured in groups.items():
        ms = [m for m in measured if m.ok] or measured  # failed runs never count as speed
        rates = [m.instances_per_s if m.ok else 0.0 for m in ms]
        summary[key] = {
            "runs": len(measured),
            "failed_runs": sum(1 for m in measured if not m.ok),
            "errors": sorted({e for m in measured for e in m.errors})[:10],
            "instances": ms[0].instances,
            "median_inst_s": statistics.median(rates),
            "min_inst_s": min(rates),
            "max_inst_s": max(rates),
            "median_mb_s": statistics.median(m.mb_per_s for m in ms),
            "median_wall_s": statistics.median(m.wall_s for m in ms),
            "peak_rss_mib": max(m.peak_rss_bytes for m in ms) / 2**20,
            "median_cpu_s": statistics.median(m.receiver_cpu_s for m in ms),
            "cpu_util": statistics.median(m.receiver_cpu_s / m.wall_s for m in ms),
            "processes": max(m.receiver_processes for m in ms),
            "cpu_by_process": [m.receiver_cpu_by_process for m in ms],
            "all_stored": all(m.ok for m in measured),
            "stored": [m.stored for m in measured],
        }
    return summary


def case_key(m: Measurement) -> str:
    case = Case(
        m.scenario,
        m.study,
        m.receiver,
        m.sender_nodelay,
        m.receiver_nodelay,
        senders=m.senders,
        listener_processes=int(m.options.get("listener_processes", 1)),
        tcp_quickack=bool(m.options.get("tcp_quickack", True)),
        fsync=bool(m.options.get("fsync", True)),
    )
    return case.key


SCENARIO_TITLES = {
    "c1": "(1) sender TCP_NODELAY=1, receivers TCP_NODELAY=1 where honoured",
    "c2": "(2) sender TCP_NODELAY=1, receivers at defaults",
    "c3": "(3) sender at default (Nagle on), receivers at defaults",
    "qa": "gateway `dicom.tcp_quickack = false`, sender at default",
    "mp": "parallel storescu (TCP_NODELAY=1) to the gateway, listener_processes 1 vs 2",
    "dx": "diagnostic, not durable: gateway `storage.fsync = false` (SQLite still syncs), "
    "sender TCP_NODELAY=1",
}


def render(info: dict[str, Any], args: argparse.Namespace, summary: dict[str, Any]) -> str:
    def get(key: str) -> dict[str, Any] | None:
        return summary.get(key)

    def rate(key: str) -> float | None:
        row = get(key)
        return row["median_inst_s"] if row else None

    gw = " lp=1 qa=1 x1"
    lines = [
        "# Ingest benchmark",
        "",
        f"Measured {info['date_utc']} by `bench/ingest/bench_ingest.py"
        f" --runs {args.runs} --slices {args.slices}`.",
        "",
        f"- machine: `nproc` = {info['nproc_command']}, {info['cpu']}, Linux {info['kernel']},"
        " shared with other work (load average at start "
        f"{', '.join(f'{x:.2f}' for x in info['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in info['loadavg_end'])})",
        f"- {info['storescu']}; {info['orthanc']}; pynetdicom {info['pynetdicom']}, "
        f"pydicom {info['pydicom']}, Python {info['python']}",
        f"- studies: CT {args.slices} slices 512x512 int16 "
        f"({info['ct_bytes'] / 1e6:.1f} MB in files), small {args.slices} instances 64x64 "
        f"({info['small_bytes'] / 1e6:.1f} MB); Explicit VR Little Endian, made by "
        "`make_ct_study.py`",
        "- sender: DCMTK `storescu`, all files on one association (unless `x2`/`x4`: that many "
        "storescu processes in parallel, each with a contiguous part of the study); time = wall "
        "time of storescu from start to exit. MB = 10^6 bytes of DICOM files.",
        "- gateway: `pacs-gateway serve`, SQLite in a fresh temp data dir, "
        "`storage.fsync = true`, `storage.min_free_mb = 0`, allowed peers `*`@127.0.0.1, "
        "`prefetch.enabled = false` (the receiver alone), log level INFO; "
        "`lp` = `dicom.listener_processes`, `qa` = `dicom.tcp_quickack`. "
        "storescp: `-od <tmp>` (writes without fsync). Orthanc: own JSON config, temp "
        "storage, no plugins, defaults otherwise (`SyncStorageArea` true).",
        "- every measurement starts a fresh receiver; `stored` checks the receiver really "
        "stored every instance (gateway: rows in `instances` = files in the spool; storescp: "
        "files; Orthanc: `/statistics` CountInstances). Peak RSS = VmHWM summed over the "
        "receiver's processes (max over runs); CPU = receiver user+sys seconds during the "
        "send (median); util = CPU / wall (1.0 = one core).",
        f"- inst/s: median of {args.runs} run(s) (min-max in brackets); a run that did not "
        "store every instance counts as failed and is left out of the speed figures.",
        f"- gateway code: snapshot of {info['gateway_code']['source']} at the start "
        f"(HEAD {info['gateway_code']['head'][:10]}, sha256 of its .py files "
        f"{info['gateway_code']['sha256_of_py_files']}; files modified against HEAD: "
        f"{', '.join(info['gateway_code']['modified_in_worktree']) or 'none'}).",
        "",
    ]
    header = (
        "| scenario | study | receiver | inst/s (min-max) | MB/s | peak RSS MiB | "
        "CPU s | util | stored | gateway / this (notes) |"
    )
    for scenario, title in SCENARIO_TITLES.items():
        rows = [(k, v) for k, v in summary.items() if k.startswith(scenario + " ")]
        if not rows:
            continue
        lines += [f"## {title}", "", header, "|---|---|---|---|---|---|---|---|---|---|"]
        for key, row in rows:
            _, study, receiver, *rest = key.split(" ")
            label = receiver + (" " + " ".join(rest) if rest else "")
            gateway_key = f"{scenario} {study} gateway{gw}"
            ratio = ""
            reference = {
                "qa": (f"c3 {study} gateway{gw}", "qa=1"),
                "mp": (key.replace(" lp=2 ", " lp=1 "), "lp=1"),
                "dx": (f"c1 {study} gateway{gw}", "fsync=1 (c1)"),
            }.get(scenario)
            if receiver != "gateway" and rate(gateway_key):
                ratio = f"{rate(gateway_key) / row['median_inst_s']:.2f}x"
            elif reference and reference[0] != key and rate(reference[0]):
                ratio = f"{row['median_inst_s'] / rate(reference[0]):.2f}x vs {reference[1]}"
            if scenario == "mp":
                # Per run, CPU seconds of the busiest processes: did both listeners work?
                shares = ", ".join(
                    "/".join(f"{x:.1f}" for x in split[: case_listeners(key)])
                    for split in row["cpu_by_process"]
                )
                ratio = "; ".join(filter(None, [ratio, f"CPU s per process by run: {shares}"]))
            stored = "all" if row["all_stored"] else f"NO: {row['stored']}"
            lines.append(
                f"| {scenario} | {study} | {label} | {row['median_inst_s']:.1f} "
                f"({row['min_inst_s']:.1f}-{row['max_inst_s']:.1f}) | "
                f"{row['median_mb_s']:.1f} | {row['peak_rss_mib']:.0f} | "
                f"{row['median_cpu_s']:.1f} | {row['cpu_util']:.2f} | {stored} | {ratio} |"
            )
        lines.append("")
    failed = {k: v for k, v in summary.items() if v["failed_runs"]}
    if failed:
        lines += ["## Failed runs", ""]
        for key, row in failed.items():
            lines.append(
                f"- {key}: {row['failed_runs']} of {row['runs']} runs failed, stored "
                f"{row['stored']}; {'; '.join(row['errors']) or 'no storescu error text'}"
            )
        lines.append("")
    lines += ["## Targets", ""]
    for verdict in targets(summary):
        lines.append(f"- {verdict}")
    lines.append("")
    return "\n".join(lines)


def case_listeners(key: str) -> int:
    return int(key.split(" lp=", 1)[1].split(" ", 1)[0]) if " lp=" in key else 1


def targets(summary: dict[str, Any]) -> list[str]:
    def rate(key: str) -> float | None:
        row = summary.get(key)
        return row["median_inst_s"] if row else None

    out = []
    gw, orth = rate("c1 ct gateway lp=1 qa=1 x1"), rate("c1 ct orthanc x1")
    if gw and orth:
        verdict = "PASS" if gw >= orth else "FAIL"
        out.append(
            f"{verdict}: TCP_NODELAY sender, one association, CT: gateway {gw:.1f} inst/s >= "
            f"Orthanc with TCP_NODELAY {orth:.1f} inst/s (ratio {gw / orth:.2f})"
        )
    for study, target in (("ct", TARGET_CT_DEFAULT_SENDER), ("small", TARGET_SMALL_DEFAULT_SENDER)):
        value = rate(f"c3 {study} gateway lp=1 qa=1 x1")
        if value:
            verdict = "PASS" if value >= target else "FAIL"
            out.append(
                f"{verdict}: default sender, {study}: gateway {value:.1f} inst/s >= {target:.0f}"
            )
    stored_ok = all(row["all_stored"] for row in summary.values())
    out.append(
        ("PASS" if stored_ok else "FAIL") + ": every receiver stored every instance in every run"
    )
    return out


# Main ----------------------------------------------------------------------------------


@contextmanager
def work_directory(parent: Path | None, keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=parent))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=200, help="instances per study")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/ingest.md")
    parser.add_argument("--json", type=Path, help="raw numbers (default: --out with .json)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 run")
    parser.add_argument(
        "--parallel", type=int, nargs="*", default=[2, 4], help="storescu processes (mp)"
    )
    parser.add_argument("--only", nargs="*", help="scenarios to run, e.g. c1 c3")
    parser.add_argument("--work-dir", type=Path, help="parent of the temp dir (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--gateway-src",
        default="worktree",
        help="gateway code to measure: 'worktree' (snapshot at start) or a git ref",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per send, seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 1
    json_path = args.json or args.out.with_suffix(".json")
    info = machine_info()
    cases = [c for c in plan(args.parallel) if not args.only or c.scenario in args.only]
    results: list[Measurement] = []
    with work_directory(args.work_dir, args.keep) as work:
        ct = make_study(work / "study-ct", args.slices, 512, seed=1)
        small = make_study(work / "study-small", args.slices, 64, seed=2)
        info["ct_bytes"] = sum(p.stat().st_size for p in ct)
        info["small_bytes"] = sum(p.stat().st_size for p in small)
        code, info["gateway_code"] = snapshot_gateway(work, args.gateway_src)
        template = migrate_template(work, code)
        print(f"{len(cases)} cases x {args.runs} runs in {work}", flush=True)
        for run in range(1, args.runs + 1):
            for number, case in enumerate(cases):
                workdir = work / f"r{run}-{number}-{case.receiver}"
                receiver = make_receiver(case, workdir, template, code)
                options: dict[str, Any] = {}
                if case.receiver == "gateway":
                    options = {
                        "listener_processes": case.listener_processes,
                        "tcp_quickack": case.tcp_quickack,
                        "fsync": case.fsync,
                    }
                try:
                    results.append(
                        measure(
                            receiver,
                            ct if case.study == "ct" else small,
                            scenario=case.scenario,
                            study=case.study,
                            run=run,
                            sender_nodelay=case.sender_nodelay,
                            receiver_nodelay=case.receiver_nodelay,
                            senders=case.senders,
                            options=options,
                            timeout_s=args.timeout,
                        )
                    )
                except (subprocess.TimeoutExpired, RuntimeError, TimeoutError, OSError) as exc:
                    print(f"  run {run} {case.key}: ERROR {exc}", flush=True)
                    results.append(
                        Measurement(
                            scenario=case.scenario,
                            study=case.study,
                            receiver=case.receiver,
                            run=run,
                            instances=len(ct),
                            bytes=0,
                            wall_s=float("inf"),
                            stored=-1,
                            ok=False,
                            peak_rss_bytes=0,
                            receiver_cpu_s=0.0,
                            receiver_processes=0,
                            receiver_cpu_by_process=[],
                            senders=case.senders,
                            sender_nodelay=case.sender_nodelay,
                            receiver_nodelay=case.receiver_nodelay,
                            options=options,
                            errors=[f"{type(exc).__name__}: {exc}"],
                        )
                    )
                finally:
                    receiver.stop()
                    if not args.keep:
                        shutil.rmtree(receiver.workdir, ignore_errors=True)
    info["loadavg_end"] = os.getloadavg()
    summary = summarise(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(info, args, summary))
    raw = {
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary,
        "measurements": [
            {**asdict(m), "instances_per_s": m.instances_per_s, "mb_per_s": m.mb_per_s}
            for m in results
        ],
        "targets": targets(summary),
    }
    json_path.write_text(json.dumps(raw, indent=2, default=str))
    print(f"wrote {args.out} and {json_path}")
    for verdict in targets(summary):
        print(verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
