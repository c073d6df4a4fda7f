"""Spool hygiene: remove files that no instance row names once they are older than a grace
period, with one audit event per pass.

Such files each hold patient data and nothing else ever removes them: the C-STORE handler
writes the file first and commits the row after; when the commit fails and the database is
still unreachable for the clean-up, the file stays (gateway/dicom/storage_scp.py keeps it
rather than risk removing a file a commit did name). Temporary files of a writer that died
are the same. The grace period (`storage.orphan_grace_s`, far longer than any C-STORE in
flight) keeps files whose row is still being committed; a file's name is chosen fresh for
every write (gateway/dicom/spool.py), so an old unnamed file cannot become named later.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.database import writer_queue
from gateway.models import Instance
from gateway.retention.purge import RetentionPass
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)

QUERY_CHUNK = 500
AUDIT_PATHS_LIMIT = 200  # relative paths (UIDs only) listed in the audit event


@dataclass
class OrphanSweep:
    removed: list[str] = field(default_factory=list)
    removed_bytes: int = 0
    kept_indexed: int = 0
    kept_recent: int = 0
    errors: int = 0


def _files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(path relative to root, lstat) of every regular file below root; links not followed."""
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # removed meanwhile (a duplicate discarded)
            if stat.S_ISREG(info.st_mode):
                yield os.path.relpath(path, root), info


class SpoolHygiene:
    def __init__(self, settings: GatewaySettings, engine: Engine) -> None:
        self.root = settings.spool_dir
        self.grace_s = settings.storage.orphan_grace_s
        self.interval_s = settings.storage.orphan_sweep_interval_s
        self.engine = engine
        self._writers = writer_queue(engine)

    def _indexed(self, relative_paths: list[str]) -> set[str]:
        found: set[str] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(relative_paths), QUERY_CHUNK):
                chunk = relative_paths[start : start + QUERY_CHUNK]
                found.update(
                    connection.execute(
                        select(Instance.file_path).where(Instance.file_path.in_(chunk))
                    ).scalars()
                )
        return found

    def sweep(self, now: float | None = None) -> OrphanSweep:
        """One pass; `now` is wall-clock seconds (file mtimes are wall-clock)."""
        now = time.time() if now is None else now
        result = OrphanSweep()
        if not self.root.is_dir():
            return result
        old: dict[str, int] = {}
        for relative, info in _files(self.root):
            if now - info.st_mtime < self.grace_s:
                result.kept_recent += 1
            else:
                old[relative] = info.st_size
        indexed = self._indexed(sorted(old))
        result.kept_indexed = len(indexed)
        for relative in sorted(set(old) - indexed):
            try:
                (self.root / relative).unlink()
            except FileNotFoundError:
                continue  # another process removed it
            except OSError as exc:
                result.errors += 1
                LOGGER.error("could not remove orphan spool file %s: %s", relative, exc)
                continue
            result.removed.append(relative)
            result.removed_bytes += old[relative]
        if result.removed or result.errors:
            self._audit(result)
        return result

    def _audit(self, result: OrphanSweep) -> None:
        detail: dict[str, object] = {
            "count": len(result.removed),
            "bytes": result.removed_bytes,
            "grace_s": self.grace_s,
            "paths": result.removed[:AUDIT_PATHS_LIMIT],  # study/series/SOP UIDs, no PHI
            "errors": result.errors,
        }
        if len(result.removed) > AUDIT_PATHS_LIMIT:
            detail["paths_left_out"] = len(result.removed) - AUDIT_PATHS_LIMIT
        with self._writers, self.engine.begin() as connection:
            record(
                connection,
                audit_row(
                    AuditKind.SPOOL_ORPHANS_REMOVED,
                    Outcome.FAILURE if result.errors else Outcome.SUCCESS,
                    actor="spool-hygiene",
                    detail=detail,
                ),
            )
        LOGGER.warning(
            "removed %d orphan spool file(s) (%d bytes) older than %g s",
            len(result.removed),
            result.removed_bytes,
            self.grace_s,
        )

    def run(self, stop: threading.Event, *, retention: RetentionPass | None = None) -> None:
        """A pass at start (orphans of a crash), then every `orphan_sweep_interval_s`; the
        retention pass (storage.retention_days set) runs on the same beat, before the sweep."""
        while not stop.is_set():
            for name, spool_pass in (
                ("retention", None if retention is None else lambda: retention.run(stop=stop)),
                ("spool hygiene", self.sweep),
            ):
                if spool_pass is None:
                    continue
                try:
                    spool_pass()
                except Exception as exc:  # the database may come back; never remove blind
                    LOGGER.error("%s pass failed: %s: %s", name, type(exc).__name__, exc)
            stop.wait(self.interval_s)
