"""Durable instance files: temporary name, fsync, no-replace link to the final name, fsync dir.

A file under its final name is always complete. The database row, committed after this, is
what makes the instance "stored"; a final file without a row (crash in between) is an orphan
that the next receipt of the same instance replaces.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SpooledFile:
    relative_path: str
    size_bytes: int


class SpoolFull(Exception):
    """Free space is below the configured threshold, or the disk ran out while writing."""


class Spool:
    def __init__(self, root: Path, *, min_free_bytes: int, fsync: bool = True) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_free_space(self, incoming: int) -> None:
        free = self.free_bytes()
        if free - incoming < self.min_free_bytes:
            raise SpoolFull(
                f"expected at least {self.min_free_bytes} bytes free after writing {incoming}, "
                f"found {free}"
            )

    def _sync_dir(self, directory: Path) -> None:
        if self.fsync:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _make_dirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        missing = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        directory.mkdir(parents=True, exist_ok=True)
        # A new directory entry is durable only once its parent is synced.
        for created in reversed(missing):
            self._sync_dir(created.parent)

    def write(
        self,
        study_uid: str,
        series_uid: str,
        sop_instance_uid: str,
        parts: tuple[bytes | memoryview, ...],
    ) -> SpooledFile:
        """Write the concatenated `parts` durably; return where they lie in the spool."""
        size = sum(len(part) for part in parts)
        directory = self.root / study_uid / series_uid
        self._make_dirs(directory)
        self.check_free_space(size)
        tmp = directory / f".{sop_instance_uid}.{os.getpid()}.{threading.get_ident()}.tmp"
        final = directory / f"{sop_instance_uid}.dcm"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                for part in parts:
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fdatasync(fd)  # data and size; the name is made durable below
            finally:
                os.close(fd)
            try:
                os.link(tmp, final)  # never replaces: the first complete copy wins
            except FileExistsError:
                # Another receipt's file (an orphan, or one in flight): keep both, the row
                # decides which one is the instance.
                final = directory / f"{sop_instance_uid}.{uuid.uuid4().hex[:12]}.dcm"
                os.link(tmp, final)
            os.unlink(tmp)
            self._sync_dir(directory)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == 28:  # ENOSPC
                raise SpoolFull(f"expected room for {size} bytes, found the disk full") from exc
            raise
        return SpooledFile(str(final.relative_to(self.root)), size)

    def discard(self, relative_path: str) -> None:
        """Remove a file that lost the race to be the instance (a concurrent duplicate)."""
        path = self.root / relative_path
        path.unlink(missing_ok=True)
        self._sync_dir(path.parent)

    def path_of(self, relative_path: str) -> Path:
        return self.root / relative_path
