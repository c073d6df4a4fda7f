"""DICOMweb benchmark: STOW-RS ingest of a 200-slice 512x512 CT study into the gateway (beside
C-STORE of the same kind of study by DCMTK storescu, in the same run) and WADO-RS retrieval
of the study (MB/s); Orthanc with its DICOMweb plugin measured the same way in the same run.

    .venv/bin/python bench/dicomweb/bench_dicomweb.py --runs 3 --slices 200

Every run starts fresh receivers in a temporary directory: `pacs-gateway web` (DICOMweb) and
`pacs-gateway serve` (C-STORE) on one fresh SQLite data dir, and an Orthanc. STOW-RS sends
the whole study in one request (multipart/related, chunked, read from disk as it goes);
retrieval reads the whole response. Results: bench/results/dicomweb.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pydicom
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "ingest"))
from make_ct_study import make_study  # noqa: E402

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
BOUNDARY = "bench-dicomweb-boundary"
GATEWAY_AE = "PACSGATEWAY"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise TimeoutError(f"expected an HTTP server at {url} within {timeout_s}s, found none")


def wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"expected a listener on port {port} within {timeout_s}s")


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def stow_body(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with path.open("rb") as fp:
            while chunk := fp.read(1024 * 1024):
                yield chunk
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def post_stow(url: str, paths: list[Path], headers: dict[str, str]) -> float:
    started = time.perf_counter()
    reply = requests.post(
        url, data=stow_body(paths), headers={"Content-Type": STOW_TYPE, **headers}, timeout=600
    )
    elapsed = time.perf_counter() - started
    if reply.status_code != 200:
        raise RuntimeError(f"STOW-RS to {url}: HTTP {reply.status_code} {reply.text[:300]}")
    return elapsed


def get_retrieve(url: str, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    size = 0
    with requests.get(
        url, headers={"Accept": RETRIEVE_ACCEPT, **headers}, stream=True, timeout=600
    ) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"WADO-RS {url}: HTTP {reply.status_code}")
        for chunk in reply.iter_content(1024 * 1024):
            size += len(chunk)
    return time.perf_counter() - started, size


def environment(data_dir: Path, http_port: int, dicom_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_GATEWAY_")}
    env["PACS_GATEWAY_DATA_DIR"] = str(data_dir)
    env["PACS_GATEWAY_HTTP_PORT"] = str(http_port)
    env["PACS_GATEWAY_LOG_LEVEL"] = "WARNING"
    env["PACS_GATEWAY_DICOM"] = json.dumps(
        {
            "ae_title": GATEWAY_AE,
            "host": "127.0.0.1",
            "port": dicom_port,
            "allowed_peers": [{"ae_title": "*", "host": "127.0.0.1"}],
        }
    )
    env["PACS_GATEWAY_STORAGE"] = json.dumps({"min_free_mb": 0, "fsync": True})
    env["PACS_GATEWAY_ASSEMBLY"] = json.dumps({"quiet_period_s": 3600})
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Run:
    gateway_stow_s: float
    gateway_stow_peak_rss_mib: float
    gateway_cstore_s: float
    gateway_retrieve_s: float
    gateway_retrieve_bytes: int
    orthanc_stow_s: float
    orthanc_retrieve_s: float
    orthanc_retrieve_bytes: int
    stored: dict[str, int] = field(default_factory=dict)


def gateway_run(workdir: Path, stow_study: list[Path], cstore_study: list[Path]) -> dict[str, Any]:
    data_dir = workdir / "gateway"
    http_port, dicom_port = free_port(), free_port()
    env = environment(data_dir, http_port, dicom_port)
    cli = [sys.executable, "-m", "gateway.cli"]
    subprocess.run([*cli, "migrate"], env=env, cwd=REPO, check=True, capture_output=True)
    token = subprocess.run(
        [sys.executable, "-c", _MAKE_TOKEN],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    log = (workdir / "gateway.log").open("ab")
    web = subprocess.Popen([*cli, "web"], env=env, cwd=REPO, stdout=log, stderr=log)
    serve = subprocess.Popen([*cli, "serve"], env=env, cwd=REPO, stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz")
        wait_port(dicom_port)
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{http_port}/dicomweb"
        with PeakRss(web.pid) as rss:
            stow_s = post_stow(f"{base}/studies", stow_study, auth)
        storescu_env = {**os.environ, "TCP_NODELAY": "1"}
        started = time.perf_counter()
        subprocess.run(
            ["storescu", "-aec", GATEWAY_AE, "127.0.0.1", str(dicom_port), *map(str, cstore_study)],
            env=storescu_env,
            check=True,
            capture_output=True,
        )
        cstore_s = time.perf_counter() - started
        study = str(pydicom.dcmread(stow_study[0], stop_before_pixels=True).StudyInstanceUID)
        retrieve_s, size = get_retrieve(f"{base}/studies/{study}", auth)
        with sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True) as connection:
            (rows,) = connection.execute("SELECT count(*) FROM instances").fetchone()
        return {
            "stow_s": stow_s,
            "peak_rss_mib": rss.peak / 2**20,
            "cstore_s": cstore_s,
            "retrieve_s": retrieve_s,
            "retrieve_bytes": size,
            "stored": int(rows),
        }
    finally:
        stop(web)
        stop(serve)
        log.close()


_MAKE_TOKEN = """
from gateway.settings import load_settings
from gateway.database import make_engine
from gateway.dicomweb.tokens import Scope, create_token
settings = load_settings()
print(create_token(make_engine(settings), "BENCH", Scope.BOTH, actor="bench", source_address=None))
"""


def orthanc_run(workdir: Path, study: list[Path]) -> dict[str, Any]:
    port = free_port()
    config = workdir / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(workdir / "orthanc-storage"),
                "IndexDirectory": str(workdir / "orthanc-index"),
                "HttpPort": port,
                "DicomServerEnabled": False,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "Plugins": [ORTHANC_PLUGIN],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                "StorageCompression": False,
                "HttpThreadsCount": 8,
            }
        )
    )
    log = (workdir / "orthanc.log").open("ab")
    process = subprocess.Popen([ORTHANC, str(config)], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/system")
        base = f"http://127.0.0.1:{port}/dicom-web"
        stow_s = post_stow(f"{base}/studies", study, {})
        uid = str(pydicom.dcmread(study[0], stop_before_pixels=True).StudyInstanceUID)
        retrieve_s, size = get_retrieve(f"{base}/studies/{uid}", {})
        stats = requests.get(f"http://127.0.0.1:{port}/statistics", timeout=30).json()
        return {
            "stow_s": stow_s,
            "retrieve_s": retrieve_s,
            "retrieve_bytes": size,
            "stored": int(stats["CountInstances"]),
        }
    finally:
        stop(process)
        log.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


def render(info: dict[str, Any], runs: list[Run], slices: int, study_mb: float) -> str:
    def rate(seconds: list[float]) -> str:
        rates = [slices / s for s in seconds]
        return f"{median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})"

    def mbs(seconds: list[float], sizes: list[int]) -> str:
        rates = [b / 1e6 / s for b, s in zip(sizes, seconds, strict=True)]
        return f"{median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})"

    g_stow = [r.gateway_stow_s for r in runs]
    g_get = ([r.gateway_retrieve_s for r in runs], [r.gateway_retrieve_bytes for r in runs])
    o_get = ([r.orthanc_retrieve_s for r in runs], [r.orthanc_retrieve_bytes for r in runs])
    g_cstore = [r.gateway_cstore_s for r in runs]
    o_stow = [r.orthanc_stow_s for r in runs]
    lines = [
        "# DICOMweb benchmark",
        "",
        f"Measured {info['date']} by `bench/dicomweb/bench_dicomweb.py --runs {len(runs)} "
        f"--slices {slices}`.",
        "",
        f"- machine: `nproc` = {info['cpus']}, {info['cpu']}, {info['system']}, shared with "
        "other work; loopback; Python {python}".format(python=info["python"]),
        f"- study: CT {slices} slices 512x512 int16, Explicit VR Little Endian "
        f"({study_mb:.1f} MB of files, `bench/ingest/make_ct_study.py`); a second study of the "
        "same kind for C-STORE",
        "- gateway: `pacs-gateway web` (gunicorn, gthread) for DICOMweb and `pacs-gateway "
        "serve` (one listener process, TCP_QUICKACK) for C-STORE, one fresh SQLite data dir "
        "per run, `storage.fsync = true`",
        "- STOW-RS: the whole study in one request, multipart/related sent chunked from disk; "
        "time = request start to response read. C-STORE: DCMTK `storescu` with TCP_NODELAY=1, "
        "one association; time = its wall time. WADO-RS: GET /studies/{uid} with "
        "`transfer-syntax=*`, the whole multipart body read; MB = 10^6 bytes of response.",
        "- Orthanc "
        f"{info['orthanc']} with its DICOMweb plugin (`orthanc-dicomweb`), fresh per run, "
        "no compression, default storage settings",
        f"- inst/s and MB/s: median of {len(runs)} runs (min-max); every run checked that each "
        "receiver stored every instance",
        "",
        "## Ingest",
        "",
        "| receiver | protocol | inst/s (min-max) | MB/s | peak RSS MiB |",
        "|---|---|---|---|---|",
        f"| gateway | STOW-RS | {rate(g_stow)} | {study_mb / median(g_stow):.1f} | "
        f"{max(r.gateway_stow_peak_rss_mib for r in runs):.0f} |",
        f"| gateway | C-STORE (storescu) | {rate(g_cstore)} | "
        f"{study_mb / median(g_cstore):.1f} |  |",
        f"| Orthanc | STOW-RS | {rate(o_stow)} | {study_mb / median(o_stow):.1f} |  |",
        "",
        "## WADO-RS retrieval of the study",
        "",
        "| server | MB/s (min-max) | s (median) | MB |",
        "|---|---|---|---|",
        f"| gateway | {mbs(*g_get)} | {median(g_get[0]):.2f} | "
        f"{runs[0].gateway_retrieve_bytes / 1e6:.1f} |",
        f"| Orthanc | {mbs(*o_get)} | {median(o_get[0]):.2f} | "
        f"{runs[0].orthanc_retrieve_bytes / 1e6:.1f} |",
        "",
    ]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    orthanc = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True).stdout
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "orthanc": orthanc.split("\n")[0].split()[-1] if orthanc else "unknown",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dicomweb.md")
    args = parser.parse_args(argv)
    info = machine_info()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as tmp:
        root = Path(tmp)
        for number in range(args.runs):
            stow_study = make_study(root / f"stow{number}", args.slices, 512, seed=number)
            cstore_study = make_study(root / f"cstore{number}", args.slices, 512, seed=100 + number)
            study_mb = sum(p.stat().st_size for p in stow_study) / 1e6
            workdir = root / f"run{number}"
            workdir.mkdir()
            gateway = gateway_run(workdir, stow_study, cstore_study)
            orthanc = orthanc_run(workdir, stow_study)
            expected = 2 * args.slices
            if gateway["stored"] != expected or orthanc["stored"] != args.slices:
                raise RuntimeError(f"expected every instance stored, found {gateway} {orthanc}")
            run = Run(
                gateway_stow_s=gateway["stow_s"],
                gateway_stow_peak_rss_mib=gateway["peak_rss_mib"],
                gateway_cstore_s=gateway["cstore_s"],
                gateway_retrieve_s=gateway["retrieve_s"],
                gateway_retrieve_bytes=gateway["retrieve_bytes"],
                orthanc_stow_s=orthanc["stow_s"],
                orthanc_retrieve_s=orthanc["retrieve_s"],
                orthanc_retrieve_bytes=orthanc["retrieve_bytes"],
                stored={"gateway": gateway["stored"], "orthanc": orthanc["stored"]},
            )
            runs.append(run)
            print(json.dumps(asdict(run)), flush=True)
            shutil.rmtree(stow_study[0].parent, ignore_errors=True)
            shutil.rmtree(cstore_study[0].parent, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(info, runs, args.slices, study_mb)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"info": info, "runs": [asdict(r) for r in runs]}, indent=2) + "\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
