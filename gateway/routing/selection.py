"""Choose the one series the model gets among those a rule selected.

Qualifying: an allowed modality, a slice count within [min_slices, max_slices], and axial
slices (judged from one instance header; a series without orientation is not axial). Among
those: the thinnest slices (unknown thickness counts as thickest), then more slices, then
the lower series number. Projection images (geometry 'image') are not checked for axial
slices; the pipeline's preferred ViewPosition (PA before AP, never a lateral) comes first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, select

from gateway.models import Instance, Series
from gateway.routing.conditions import series_label
from gateway.routing.config import SeriesSelectionSettings


@dataclass(frozen=True, slots=True)
class SeriesChoice:
    series_instance_uid: str | None  # None when no series qualifies
    reason: str  # why this series was chosen, or why none was
    rejected: tuple[str, ...]  # one reason per candidate that did not qualify
    # When none qualifies: the stable reason code of the best-ranked candidate's problem
    # ("not_accepted.modality", ".slice_count", ".geometry", ".view_position",
    # ".unreadable"), and that candidate, which the failed job names.
    code: str | None = None
    closest_series_uid: str | None = None


@dataclass(frozen=True, slots=True)
class _Candidate:
    uid: str
    label: str
    series_number: int | None
    modality: str | None
    slice_thickness: float | None
    instance_count: int
    series_id: int

    def rank(self) -> tuple[bool, float, int, bool, int, str]:
        return (
            self.slice_thickness is None,
            self.slice_thickness or 0.0,
            -self.instance_count,
            self.series_number is None,
            self.series_number or 0,
            self.uid,
        )


def slice_tilt_deg(orientation: Sequence[Any]) -> float:
    """Angle between the slice normal (row x column direction) and the patient z axis.

    Raises ValueError when `orientation` is not six numbers spanning a plane."""
    if len(orientation) != 6:
        raise ValueError(f"expected 6 ImageOrientationPatient values, found {len(orientation)}")
    rx, ry, rz, cx, cy, cz = (float(v) for v in orientation)
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
    if norm < 1e-6:
        raise ValueError("expected row and column directions spanning a plane, found parallel")
    return math.degrees(math.acos(min(1.0, abs(nz) / norm)))


def _first_instance_path(connection: Connection, series_id: int) -> str | None:
    return connection.execute(
        select(Instance.file_path)
        .where(Instance.series_id == series_id)
        .order_by(Instance.instance_number.is_(None), Instance.instance_number, Instance.id)
        .limit(1)
    ).scalar()


def _axial_problem(
    connection: Connection, spool_dir: Path, candidate: _Candidate, tolerance_deg: float
) -> str | None:
    """None when the series is axial, else why not (read from one instance header)."""
    relative = _first_instance_path(connection, candidate.series_id)
    if relative is None:
        return "no stored instance to read the orientation from"
    try:
        ds = dcmread(
            spool_dir / relative,
            stop_before_pixels=True,
            specific_tags=["ImageOrientationPatient"],
        )
    except (OSError, InvalidDicomError, EOFError) as exc:
        return f"header of {relative} unreadable ({type(exc).__name__})"
    orientation = ds.get("ImageOrientationPatient")
    if not orientation:
        return "no ImageOrientationPatient: not known to be axial"
    try:
        tilt = slice_tilt_deg(list(orientation))
    except (TypeError, ValueError) as exc:
        return f"ImageOrientationPatient unusable: {exc}"
    if tilt > tolerance_deg:
        return f"slice normal {tilt:.0f} deg from the body axis, more than {tolerance_deg:g}"
    return None


def _view_position(
    connection: Connection, spool_dir: Path, candidate: _Candidate, wanted: Sequence[str]
) -> tuple[str | None, int]:
    """Images: (why not, preference) from one header's ViewPosition; the listed values in
    their order, then a series without one; another value is passed over (a lateral view)."""
    if not wanted:
        return None, 0
    relative = _first_instance_path(connection, candidate.series_id)
    if relative is None:
        return "no stored instance to read the view position from", 0
    try:
        ds = dcmread(spool_dir / relative, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except (OSError, InvalidDicomError, EOFError) as exc:
        return f"header of {relative} unreadable ({type(exc).__name__})", 0
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if not view:
        return None, len(wanted)
    if view not in wanted:
        return f"view position {view!r}, not in {list(wanted)}", 0
    return None, list(wanted).index(view)


def _rejection_code(candidate: _Candidate, settings: SeriesSelectionSettings) -> str:
    """The code of what `_rejection` finds first (the same order of checks)."""
    allowed = [m.strip().upper() for m in settings.modalities]
    if (candidate.modality or "").strip().upper() not in allowed:
        return "modality"
    return "slice_count"


def _rejection(candidate: _Candidate, settings: SeriesSelectionSettings) -> str | None:
    allowed = [m.strip().upper() for m in settings.modalities]
    modality = (candidate.modality or "").strip().upper()
    if modality not in allowed:
        return f"modality {candidate.modality!r}, not in {settings.modalities}"
    if candidate.instance_count < settings.min_slices:
        return f"{candidate.instance_count} instances, fewer than min_slices {settings.min_slices}"
    if candidate.instance_count > settings.max_slices:
        return f"{candidate.instance_count} instances, more than max_slices {settings.max_slices}"
    return None


def _load(connection: Connection, uids: Sequence[str]) -> list[_Candidate]:
    rows = connection.execute(
        select(
            Series.id,
            Series.series_instance_uid,
            Series.series_number,
            Series.modality,
            Series.slice_thickness,
            Series.instance_count,
        ).where(Series.series_instance_uid.in_(list(uids)))
    ).all()
    return [
        _Candidate(
            uid=row.series_instance_uid,
            label=series_label(row.series_number, row.series_instance_uid),
            series_number=row.series_number,
            modality=row.modality,
            slice_thickness=row.slice_thickness,
            instance_count=row.instance_count,
            series_id=row.id,
        )
        for row in rows
    ]


def select_series(
    connection: Connection,
    spool_dir: Path,
    series_instance_uids: Sequence[str],
    settings: SeriesSelectionSettings,
) -> SeriesChoice:
    """Pick the series for the model among `series_instance_uids` (a rule's selection)."""
    if not series_instance_uids:
        return SeriesChoice(None, "no candidate series", ())
    candidates = _load(connection, series_instance_uids)
    found = {c.uid for c in candidates}
    rejected = [
        f"series {uid}: expected in the database, found no such series"
        for uid in dict.fromkeys(series_instance_uids)
        if uid not in found
    ]
    qualifying: list[_Candidate] = []
    preference: dict[str, int] = {}
    closest: tuple[str, str] | None = None  # (code, series) of the best-ranked rejection
    wanted = [v.strip().upper() for v in settings.view_positions]
    for candidate in sorted(candidates, key=_Candidate.rank):
        problem, code = _rejection(candidate, settings), _rejection_code(candidate, settings)
        if problem is None and settings.geometry == "volume":
            problem = _axial_problem(connection, spool_dir, candidate, settings.axial_tolerance_deg)
            code = "geometry"
        if problem is None and settings.geometry == "image":
            problem, preference[candidate.uid] = _view_position(
                connection, spool_dir, candidate, wanted
            )
            code = "view_position"
        if problem is None:
            qualifying.append(candidate)
        else:
            if problem.startswith(("header of", "no stored instance")):
                code = "unreadable"
            closest = closest or (f"not_accepted.{code}", candidate.uid)
            rejected.append(f"{candidate.label}: {problem}")
    # images: the preferred view first (stable: the rank decides among equals)
    qualifying.sort(key=lambda c: preference.get(c.uid, 0))
    if not qualifying:
        return SeriesChoice(
            None,
            f"none of {len(set(series_instance_uids))} candidate series qualifies "
            f"(modality in {settings.modalities}, {settings.min_slices}-"
            f"{settings.max_slices} instances"
            f"{', axial' if settings.geometry == 'volume' else ''})",
            tuple(rejected),
            code=closest[0] if closest else None,
            closest_series_uid=closest[1] if closest else None,
        )
    best = qualifying[0]  # candidates were ranked before the checks
    thickness = "unknown" if best.slice_thickness is None else f"{best.slice_thickness:g} mm"
    return SeriesChoice(
        best.uid,
        f"{best.label}: {thickness} slices, {best.instance_count} instances, thinnest of "
        f"{len(qualifying)} qualifying",
        tuple(rejected),
    )
