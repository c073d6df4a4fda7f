"""The prefetch cache: one file per instance, `<data_dir>/prefetch/<series>/<instance>.slice`
(names are hashes of the UIDs), holding the decoded stored pixels, the model-grid slices and
what they were made from: the SOP Instance UID, the spool file's name, size and modification
time, the rescale and pixel spacing. An entry counts only for that very file: a re-sent
instance stored under another file, or a file changed, is decoded again. The file is a
JSON header and the raw arrays (one read, no copy: an .npz took four times as long).

Entries are written under a temporary name and renamed, never synced (a cache: a torn entry
after a crash fails to load and counts as missing). They hold pixel data (PHI): files 0640
and folders 0750 like the spool. A series' folder goes when its job's results are built, and
any folder untouched for `prefetch.max_age_s` goes on the next sweep (prefetcher and worker)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workers.inference.series import PrefetchedSlice, SeriesFile

LOGGER = logging.getLogger(__name__)
CACHE_DIR = "prefetch"
FORMAT = 1
FILE_MODE = 0o640
DIR_MODE = 0o750
MAGIC = b"PGWSLICE"
_ALIGN = 64
_GRID_PREFIX = "grid_"


def cache_root(data_dir: Path) -> Path:
    return data_dir / CACHE_DIR


def _hashed(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:32]


def _identity(path: Path, sop_instance_uid: str, stat: os.stat_result) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "sop_instance_uid": sop_instance_uid,
        "file": path.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


class SeriesCache:
    """The cached slices of one series."""

    def __init__(self, data_dir: Path, series_instance_uid: str) -> None:
        self.directory = cache_root(data_dir) / _hashed(series_instance_uid)

    def _entry(self, sop_instance_uid: str) -> Path:
        return self.directory / f"{_hashed(sop_instance_uid)}.slice"

    def lookup(self, file: SeriesFile) -> PrefetchedSlice | None:
        """The slice made from this very file, or None (none cached, another file, unreadable)."""
        if not file.sop_instance_uid:
            return None
        entry = self._entry(file.sop_instance_uid)
        try:
            stat = file.path.stat()
            meta, arrays = _read_entry(entry)
            if meta.get("identity") != _identity(file.path, file.sop_instance_uid, stat):
                return None
            return PrefetchedSlice(
                stored=arrays["stored"],
                rescale=(float(meta["rescale"][0]), float(meta["rescale"][1])),
                pixel_spacing=(float(meta["pixel_spacing"][0]), float(meta["pixel_spacing"][1])),
                grids={
                    name[len(_GRID_PREFIX) :]: array
                    for name, array in arrays.items()
                    if name.startswith(_GRID_PREFIX)
                },
            )
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file: decode from the spool instead
            LOGGER.warning("prefetch entry %s unreadable, ignored: %s", entry.name, exc)
            return None

    def holds(self, path: Path, sop_instance_uid: str) -> bool:
        return self.lookup(SeriesFile(path, sop_instance_uid)) is not None

    def write(
        self,
        path: Path,
        sop_instance_uid: str,
        stat: os.stat_result,
        stored: NDArray[Any],
        rescale: tuple[float, float],
        pixel_spacing: tuple[float, float],
        grids: Mapping[str, NDArray[np.float32]],
    ) -> Path:
        """Store one slice made from `path` as it was when `stat` was taken."""
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        meta = {
            "identity": _identity(path, sop_instance_uid, stat),
            "rescale": list(rescale),
            "pixel_spacing": list(pixel_spacing),
        }
        final = self._entry(sop_instance_uid)
        tmp = self.directory / f".{final.stem}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as out:
                arrays = {"stored": stored, **{f"{_GRID_PREFIX}{k}": v for k, v in grids.items()}}
                _write_entry(out, meta, arrays)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return final

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _padded(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


def _write_entry(out: Any, meta: dict[str, Any], arrays: Mapping[str, NDArray[Any]]) -> None:
    """MAGIC, the header's length (8 bytes), the JSON header, then each array's bytes, every
    part starting on a 64-byte boundary."""
    layout = []
    offset = 0
    for name, array in arrays.items():
        layout.append([name, array.dtype.str, list(array.shape), offset])
        offset += _padded(array.nbytes)
    header = json.dumps({"meta": meta, "arrays": layout}).encode()
    start = _padded(len(MAGIC) + 8 + len(header))
    out.write(MAGIC + len(header).to_bytes(8, "little") + header)
    out.write(b"\0" * (start - len(MAGIC) - 8 - len(header)))
    for array in arrays.values():
        data = np.ascontiguousarray(array).tobytes()
        out.write(data + b"\0" * (_padded(len(data)) - len(data)))


def _read_entry(path: Path) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    data = path.read_bytes()
    if data[: len(MAGIC)] != MAGIC:
        raise ValueError(f"expected {MAGIC!r} at the start, found {data[: len(MAGIC)]!r}")
    size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    header = json.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + size])
    start = _padded(len(MAGIC) + 8 + size)
    arrays = {}
    for name, dtype, shape, offset in header["arrays"]:
        count = int(np.prod(shape, dtype=np.int64))
        if start + offset + count * np.dtype(dtype).itemsize > len(data):
            raise ValueError(f"expected {name} within the file's {len(data)} bytes, found less")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=start + offset)
        arrays[name] = array.reshape(shape)
    return header["meta"], arrays


def sweep(data_dir: Path, max_age_s: float, now: float | None = None) -> int:
    """Remove each series folder not written to for `max_age_s`; returns how many."""
    root = cache_root(data_dir)
    limit = (time.time() if now is None else now) - max_age_s
    removed = 0
    try:
        folders = list(root.iterdir())
    except FileNotFoundError:
        return 0
    for folder in folders:
        try:
            if folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
