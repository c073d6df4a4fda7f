"""CPU per instance of the store path, in process: header parse, spool write, index commit.

    .venv/bin/python bench/ingest/micro_store.py --code HEAD --code worktree --instances 400

Each code version runs in its own interpreter (PYTHONPATH = a snapshot of it) on the same
study and a fresh migrated SQLite database; CPU = time.process_time of this process (user +
sys, kernel time of fsync submission included), so neighbours on a shared machine move it
far less than wall-clock figures. The network (DUL, DIMSE decode) is not measured here:
bench_ingest.py measures the whole receiver.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_ingest import gateway_command, gateway_environment, snapshot_gateway
from make_ct_study import make_study

CHILD = r"""
import json, os, sys, time
from pathlib import Path
from pydicom.filereader import read_file_meta_info
from gateway.settings import GatewaySettings
from gateway.database import make_engine
from gateway.dicom.header import read_header
from gateway.dicom.spool import Spool
from gateway.dicom.store_instance import InstanceStore
from gateway.ingest import Sender

files, data_dir, rounds = json.loads(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
settings = GatewaySettings(data_dir=data_dir)
engine = make_engine(settings)
spool = Spool(settings.spool_dir, min_free_bytes=0, fsync=True)
store = InstanceStore(engine, spool)
sender = Sender("BENCH", "127.0.0.1")
bodies = []
for name in files:
    raw = Path(name).read_bytes()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    bodies.append((raw[:meta_end], memoryview(raw[meta_end:]),
                   str(read_file_meta_info(name).TransferSyntaxUID)))
cpu = time.process_time
parse, spool_s, commit = [], [], []
for meta, body, ts in bodies:  # parse alone, repeated
    start = cpu()
    for _ in range(rounds):
        header = read_header(body, ts)
    parse.append((cpu() - start) / rounds)
for meta, body, ts in bodies:
    header = read_header(body, ts)
    start = cpu()
    spooled = spool.write(header.study_instance_uid, header.series_instance_uid,
                          header.sop_instance_uid, (meta, body))
    middle = cpu()
    store.index.record_instance(header, spooled, sender)
    end = cpu()
    spool_s.append(middle - start)
    commit.append(end - middle)
print(json.dumps({"parse": parse, "spool": spool_s, "commit": commit}))
"""


def run_child(code: Path, work: Path, files: list[Path], rounds: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(dir=work, prefix="data-"))
    env = gateway_environment(code, data, 1)
    subprocess.run(gateway_command("migrate"), env=env, check=True, capture_output=True)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([str(f) for f in files]), str(data), str(rounds)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", default=[], help="'worktree' or a git ref")
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="header parses per instance")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per version")
    args = parser.parse_args()
    codes = args.code or ["HEAD", "worktree"]
    with tempfile.TemporaryDirectory(prefix="micro-store-") as tmp:
        work = Path(tmp)
        files = make_study(work / "study", args.instances, args.size, seed=5)
        snapshots = {}
        for source in codes:
            folder = work / f"code-{len(snapshots)}"
            folder.mkdir()
            snapshots[source] = snapshot_gateway(folder, source)[0]
        results: dict[str, dict[str, list[float]]] = {c: {} for c in codes}
        for _ in range(args.repeat):
            for source in codes:
                got = run_child(snapshots[source], work, files, args.rounds)
                for part, values in got.items():
                    results[source].setdefault(part, []).append(statistics.mean(values))
        print(
            f"CPU ms per instance (mean per run, median of {args.repeat} runs), load "
            f"{os.getloadavg()[0]:.1f}"
        )
        print(f"{'code':<12} {'parse':>7} {'spool':>7} {'commit':>7} {'sum':>7}")
        for source, parts in results.items():
            med = {p: statistics.median(v) * 1000 for p, v in parts.items()}
            total = sum(med.values())
            print(
                f"{source:<12} {med['parse']:7.3f} {med['spool']:7.3f} {med['commit']:7.3f} "
                f"{total:7.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
