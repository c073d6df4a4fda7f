"""A STOW-RS part is made durable as a C-STORE's dataset is (gateway/dicom/spool.py): its
bytes synced under a temporary name, its final name made and the directory synced, and
only then its row committed. Seen from the system calls the web server's threads make in
this process (os.fdatasync and os.fsync recorded, then done): at each sync the database must
not yet hold the instance's row. (tests/listener/test_durability_order.py proves the same
order for C-STORE with strace.)"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select

from gateway.models import Instance
from tests.dicom_samples import ct_instance
from tests.dicomweb.server import WebServer
from tests.dicomweb.stow_helpers import file_bytes, referenced, stow


@dataclass
class SyncLog:
    """What each sync under the spool saw: the file synced (by inode) or the directory's
    names, and whether the instance's row was already in the database then."""

    spool: Path
    engine: Engine
    files: dict[str, tuple[int, bool]] = field(default_factory=dict)  # uid: (inode, row)
    names: dict[str, tuple[int, bool]] = field(default_factory=dict)  # uid: (inode, row)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _row_exists(self, uid: str) -> bool:
        with self.engine.connect() as connection:
            found = connection.execute(
                select(Instance.id).where(Instance.sop_instance_uid == uid)
            ).first()
        return found is not None

    def file_synced(self, fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if self.spool not in path.parents or not path.name.endswith(".tmp"):
            return
        uid = path.name[1:].rsplit(".", 3)[0]  # .<uid>.<pid>.<tid>.tmp
        with self.lock:
            self.files[uid] = (os.fstat(fd).st_ino, self._row_exists(uid))

    def directory_synced(self, fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path != self.spool and self.spool not in path.parents:
            return
        for entry in path.glob("*.dcm"):
            uid = entry.name.removesuffix(".dcm")
            with self.lock:
                if uid not in self.names:  # the first sync that saw this name
                    self.names[uid] = (entry.stat().st_ino, self._row_exists(uid))


@pytest.fixture
def sync_log(web: WebServer, monkeypatch: pytest.MonkeyPatch) -> SyncLog:
    log = SyncLog(web.settings.spool_dir.resolve(), web.engine)
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd: int) -> None:
        log.file_synced(fd)
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        log.directory_synced(fd) if os.path.isdir(f"/proc/self/fd/{fd}") else log.file_synced(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    return log


def test_each_part_is_synced_and_named_before_its_row_is_committed(
    web: WebServer, sync_log: SyncLog
) -> None:
    study, series = generate_uid(), generate_uid()
    datasets = [ct_instance(study, series, i, rows=8, columns=8) for i in range(3)]
    reply = stow(web, [file_bytes(ds) for ds in datasets], web.token("MODALITY"))
    assert reply.status == 200, reply.text
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    assert referenced(reply.dataset) == uids
    for uid in uids:
        final = web.settings.spool_dir / study / series / f"{uid}.dcm"
        assert uid in sync_log.files, f"expected the bytes of {uid} synced, found no sync"
        inode, row_then = sync_log.files[uid]
        assert not row_then, f"expected {uid}'s bytes synced before its row, found the row"
        assert final.stat().st_ino == inode, "expected the synced file under the final name"
        assert uid in sync_log.names, f"expected the directory synced after {uid} was named"
        named_inode, row_then = sync_log.names[uid]
        assert named_inode == inode and not row_then, (
            f"expected {uid}'s name made durable before its row, found the row first"
        )
