"""Durability order, seen from the system calls of a real `pacs-gateway serve`.

SIGKILL keeps the page cache, so a kill test passes without any fsync. Here the gateway runs
under strace while DCMTK storescu sends a few instances, and for each instance the trace
must show, in this order:

1. the spool file's bytes written, then synced (fdatasync or fsync of that file);
2. its final name made (link, linkat or rename to `<SOP Instance UID>.dcm`), then the
   directory synced;
3. only then the instance's row reaching the database (SQLite: a write into the database
   or its WAL holding the UID; PostgreSQL: a message to the server holding the UID), and
   the commit made durable (SQLite: the WAL synced; PostgreSQL: COMMIT sent);
4. only then the C-STORE response holding the UID sent on the association's socket.

Order is strace's: a call "happens before" another when its return is logged before the
other's entry (threads are followed; an unfinished call ends at its "resumed" line).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from pydicom import dcmread
from sqlalchemy import Engine

from gateway.settings import GatewaySettings
from tests.conftest import GATEWAY_AE, REPO, settings_environment, wait_for_port
from tests.db_queries import instance_rows
from tests.dicom_samples import write_series

SYSCALLS = (
    "write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,"
    "fsync,fdatasync,link,linkat,rename,renameat,renameat2"
)
_LINE = re.compile(r"^(?P<tid>\d+) +(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)$")
# "7</spool/...>" or "8<TCP:[127.0.0.1:104->127.0.0.1:5555]>", then ", ", ")" or, when
# another thread's call came in between, " <unfinished ...>"
_FD_PATH = re.compile(r"^-?\d+<(?P<path>.*?)>(?:, |\)| <unfinished)")


@dataclass
class Call:
    name: str
    args: str  # as strace printed them, entry and exit parts joined
    start: int  # line of entry
    end: int  # line of return

    def fd_path(self) -> str:
        match = _FD_PATH.match(self.args)
        return match.group("path") if match else ""


@dataclass
class Trace:
    calls: list[Call] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Trace:
        trace = cls()
        pending: dict[tuple[str, str], Call] = {}
        for index, line in enumerate(text.splitlines()):
            match = _LINE.match(line)
            if match is None:
                continue
            tid, rest = match.group("tid"), match.group("rest")
            resumed = _RESUMED.match(rest)
            if resumed:
                call = pending.pop((tid, resumed.group("name")), None)
                if call is not None:
                    call.args += resumed.group("args")
                    call.end = index
                continue
            entry = _CALL.match(rest)
            if entry is None:
                continue
            call = Call(entry.group("name"), entry.group("args"), index, index)
            trace.calls.append(call)
            if rest.endswith("<unfinished ...>"):
                pending[(tid, call.name)] = call
        return trace

    def first(self, what: str, predicate) -> Call:  # type: ignore[no-untyped-def]
        for call in self.calls:
            if predicate(call):
                return call
        raise AssertionError(f"expected {what} in the trace, found none")


def happens_before(first: Call, then: Call) -> bool:
    return first.end < then.start


WRITES = ("write", "writev", "pwrite64", "pwritev", "pwritev2")
SENDS = ("write", "writev", "sendto", "sendmsg")
SYNCS = ("fsync", "fdatasync")


def check_instance(
    trace: Trace, uid: str, spool: Path, dicom_port: int, database: str, db_port: int
) -> None:
    final_name = f"/{uid}.dcm"
    spool_text = str(spool)
    data = trace.first(
        f"the spool file of {uid} written",
        lambda c: c.name in WRITES and c.fd_path().startswith(spool_text) and uid in c.args,
    )
    file_key = data.fd_path()  # the temporary name, or the anonymous O_TMPFILE inode
    file_sync = trace.first(
        f"a sync of {file_key} after its bytes were written",
        lambda c: c.name in SYNCS and c.fd_path() == file_key and happens_before(data, c),
    )
    link = trace.first(
        f"the final name {final_name} made",
        lambda c: (
            c.name in ("link", "linkat", "rename", "renameat", "renameat2")
            and f'{final_name}"' in c.args
        ),
    )
    directory = str(
        Path(re.findall(r'"([^"]*' + re.escape(final_name) + ')"', link.args)[-1]).parent
    )
    dir_sync = trace.first(
        f"a sync of {directory} after the link",
        lambda c: c.name in SYNCS and c.fd_path() == directory and happens_before(link, c),
    )
    if database == "sqlite":
        row = trace.first(
            f"the row of {uid} written to the database",
            lambda c: c.name in WRITES and ".db" in c.fd_path() and uid in c.args,
        )
        commit = trace.first(
            "the database's WAL synced after the row",
            lambda c: (
                c.name in SYNCS and c.fd_path().endswith(".db-wal") and happens_before(row, c)
            ),
        )
    else:
        to_server = f":{db_port}]"
        row = trace.first(
            f"the row of {uid} sent to PostgreSQL",
            lambda c: c.name in SENDS and to_server in c.fd_path() and uid in c.args,
        )
        commit = trace.first(
            "COMMIT sent to PostgreSQL after the row",
            lambda c: (
                c.name in SENDS
                and to_server in c.fd_path()
                and "COMMIT" in c.args
                and happens_before(row, c)
            ),
        )
    response = trace.first(
        f"the C-STORE response for {uid} sent",
        lambda c: c.name in SENDS and f"127.0.0.1:{dicom_port}->" in c.fd_path() and uid in c.args,
    )
    order = {
        "file synced before its row": happens_before(file_sync, row),
        "directory synced before the row": happens_before(dir_sync, row),
        "commit durable before the response": happens_before(commit, response),
        "file synced before the response": happens_before(file_sync, response),
        "directory synced before the response": happens_before(dir_sync, response),
    }
    assert all(order.values()), f"{uid}: expected every step in order, found {order}"


@pytest.mark.slow
def test_spool_and_directory_are_synced_before_commit_and_response(
    settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    assert settings.storage.fsync, "expected storage.fsync on by default"
    files = write_series(tmp_path / "study", 4)
    uids = [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
    trace_file = tmp_path / "serve.strace"
    log = tmp_path / "gateway.log"
    command = [
        "strace",
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-yy",  # file paths and socket endpoints for every descriptor
        "-s",
        "65536",
        "-e",
        f"trace={SYSCALLS}",
        "-o",
        str(trace_file),
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
    ]
    with log.open("ab") as out:
        strace = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=settings_environment(settings),
        )
    try:
        wait_for_port(settings.dicom.port, timeout_s=60)
        sent = subprocess.run(
            [
                "storescu",
                "-aec",
                GATEWAY_AE,
                "127.0.0.1",
                str(settings.dicom.port),
                *map(str, files),
            ],
            capture_output=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert set(instance_rows(engine)) == set(uids)
    finally:
        # The gateway (strace's child) ends, then strace. Everything checked below was
        # traced before storescu got its last response.
        gateways = psutil.Process(strace.pid).children()
        for gateway in gateways:
            gateway.terminate()
        _, alive = psutil.wait_procs(gateways, timeout=20)
        for gateway in alive:
            gateway.kill()
        strace.wait(timeout=30)
    trace = Trace.parse(trace_file.read_text(errors="replace"))
    database = engine.dialect.name
    db_port = engine.url.port or 5432
    for uid in uids:
        check_instance(
            trace, uid, settings.spool_dir.resolve(), settings.dicom.port, database, db_port
        )
