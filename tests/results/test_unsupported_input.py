"""Series a SEG cannot describe give an explicit reason, not a crash."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from gateway.results.build import build_results
from gateway.results.config import ResultsSettings
from gateway.results.source import UnsupportedReason, UnsupportedSeries, read_source_series
from tests.results.cases import phantom_case, projection_radiograph


def test_projection_radiograph_without_frame_of_reference(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=31, shape=(4, 64, 64), n_nodules=0)
    cr = projection_radiograph()
    findings = type(case.findings)(
        **{
            **case.findings.__dict__,
            "sop_instance_uids": (str(cr.SOPInstanceUID),),
            "labels": case.findings.labels[:1],
        }
    )
    with pytest.raises(UnsupportedSeries) as caught:
        build_results([cr], findings, ResultsSettings())
    assert caught.value.reason is UnsupportedReason.NO_FRAME_OF_REFERENCE
    assert "FrameOfReferenceUID" in str(caught.value)


def test_duplicate_slice_positions(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=32, shape=(6, 64, 64), n_nodules=0)
    headers = read_source_series(case.paths)
    headers[3].ImagePositionPatient = headers[2].ImagePositionPatient
    with pytest.raises(UnsupportedSeries) as caught:
        build_results(headers, case.findings, ResultsSettings())
    assert caught.value.reason is UnsupportedReason.DUPLICATE_SLICE_POSITIONS
    assert "expected 6 distinct slice positions, found 5" in str(caught.value)


def test_findings_for_other_images(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=33, shape=(4, 64, 64), n_nodules=0)
    headers = read_source_series(case.paths)[:3]
    with pytest.raises(UnsupportedSeries) as caught:
        build_results(headers, case.findings, ResultsSettings())
    assert caught.value.reason is UnsupportedReason.FINDINGS_MISMATCH


def test_mixed_orientation(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=34, shape=(4, 64, 64), n_nodules=0)
    headers = read_source_series(case.paths)
    headers[1].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(UnsupportedSeries) as caught:
        build_results(headers, case.findings, ResultsSettings())
    assert caught.value.reason is UnsupportedReason.MIXED_GEOMETRY
    assert pydicom  # module used for the CR header in cases
