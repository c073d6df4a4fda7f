"""Profile the gateway (py-spy) while storescu sends a study: where does ingest time go?

    .venv/bin/pip install py-spy
    .venv/bin/python bench/ingest/profile_gateway.py --size 512 --slices 200 --nodelay

Writes py-spy's collapsed stacks (with and without idle, i.e. time blocked in system calls
such as fsync and socket reads) and prints the functions with the most samples.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

from bench_ingest import (
    VENV_BIN,
    GatewayReceiver,
    migrate_template,
    send,
    snapshot_gateway,
    work_directory,
)
from make_ct_study import make_study


def top_functions(collapsed: Path, limit: int) -> list[tuple[str, int, int]]:
    """(function, inclusive samples, self samples) from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    rows = [(name, inclusive[name], own[name]) for name, _ in own.most_common(limit)]
    rows.append(("TOTAL", total, total))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--nodelay", action="store_true", help="sender TCP_NODELAY=1")
    parser.add_argument("--idle", action="store_true", help="include idle (blocked) samples")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--senders", type=int, default=1, help="parallel storescu processes")
    parser.add_argument("--listener-processes", type=int, default=1)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gateway-profile.txt"))
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--gateway-src", default="worktree", help="'worktree' or a git ref")
    args = parser.parse_args(argv)
    with work_directory(None, keep=False) as work:
        files = make_study(work / "study", args.slices, args.size, seed=3)
        code, _ = snapshot_gateway(work, args.gateway_src)
        receiver = GatewayReceiver(
            work / "gw",
            migrate_template(work, code),
            code,
            listener_processes=args.listener_processes,
        )
        try:
            receiver.start()
            assert receiver.proc is not None
            command = [str(VENV_BIN / "py-spy"), "record", "--format", "raw"]
            command += ["--rate", str(args.rate)]
            command += ["--idle"] if args.idle else []
            command += ["--gil"] if args.gil else []
            command += ["--subprocesses"] if args.listener_processes > 1 else []
            command += ["--output", str(args.out), "--pid", str(receiver.proc.pid)]
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)
            wall, errors = send(
                files, receiver, nodelay=args.nodelay, senders=args.senders, timeout_s=300
            )
            time.sleep(0.3)
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(timeout=60)
            print(f"{len(files)} instances in {wall:.2f}s = {len(files) / wall:.1f}/s {errors}")
        finally:
            receiver.stop()
    for name, inclusive, own in top_functions(args.out, args.top):
        print(f"{inclusive:7d} {own:7d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
