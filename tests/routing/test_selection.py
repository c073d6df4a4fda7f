"""Choosing the series for the model: the thinnest axial CT with enough slices, with a reason
for each series passed over."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from gateway.models import Instance
from gateway.routing.config import RuleSettings, SeriesSelectionSettings
from gateway.routing.rules import route_study
from gateway.routing.selection import select_series, slice_tilt_deg
from tests.conftest import RunningGateway
from tests.routing.studies import CORONAL, SeriesSpec, send_study, tilted

SETTINGS = SeriesSelectionSettings(min_slices=8)


def test_thinnest_axial_ct_among_localizer_short_and_other_series(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    sent = send_study(
        gateway,
        tmp_path / "in",
        [
            SeriesSpec(1, 10, thickness=0.5, orientation=CORONAL, description="SCOUT"),
            SeriesSpec(2, 4, thickness=0.6),
            SeriesSpec(3, 10, thickness=2.5),
            SeriesSpec(4, 10, thickness=1.0),
            SeriesSpec(5, 12, thickness=None),
            SeriesSpec(6, 10, thickness=0.5, modality="PT"),
            SeriesSpec(7, 10, thickness=0.7, orientation=None),
        ],
    )
    with engine.connect() as connection:
        decision = route_study(connection, sent.study_uid, [RuleSettings(name="default")])
        choice = select_series(
            connection, gateway.settings.spool_dir, decision.series_instance_uids, SETTINGS
        )
    assert choice.series_instance_uid == sent.series_uids[4], choice
    assert choice.reason == "series 4: 1 mm slices, 10 instances, thinnest of 3 qualifying"
    assert set(choice.rejected) == {
        "series 1: slice normal 90 deg from the body axis, more than 30",
        "series 2: 4 instances, fewer than min_slices 8",
        "series 6: modality 'PT', not in ['CT']",
        "series 7: no ImageOrientationPatient: not known to be axial",
    }


def test_ties_go_to_more_slices_then_lower_series_number(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    sent = send_study(
        gateway,
        tmp_path / "in",
        [
            SeriesSpec(9, 3, thickness=1.0),
            SeriesSpec(8, 3, thickness=1.0),
            SeriesSpec(7, 2, thickness=1.0),
            SeriesSpec(1, 4, thickness=None),  # unknown thickness counts as thickest
        ],
    )
    settings = SeriesSelectionSettings(min_slices=2)
    uids = sent.series_uids
    with engine.connect() as connection:
        spool = gateway.settings.spool_dir
        assert select_series(connection, spool, list(uids.values()), settings) == (
            select_series(connection, spool, [uids[7], uids[9], uids[8], uids[1]], settings)
        )  # the order of the candidates does not matter
        best = select_series(connection, spool, list(uids.values()), settings)
        assert best.series_instance_uid == uids[8]
        assert (
            select_series(connection, spool, [uids[9], uids[7]], settings).series_instance_uid
            == (uids[9])
        )
        assert select_series(connection, spool, [uids[1]], settings).series_instance_uid == uids[1]


def test_gantry_tilt_within_tolerance_is_axial(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    sent = send_study(gateway, tmp_path / "in", [SeriesSpec(2, 8, orientation=tilted(20.0))])
    uid = sent.series_uids[2]
    with engine.connect() as connection:
        spool = gateway.settings.spool_dir
        loose = select_series(connection, spool, [uid], SETTINGS)
        strict = select_series(
            connection, spool, [uid], SeriesSelectionSettings(axial_tolerance_deg=10)
        )
    assert loose.series_instance_uid == uid
    assert strict.series_instance_uid is None
    assert strict.rejected == ("series 2: slice normal 20 deg from the body axis, more than 10",)


def test_no_qualifying_series_says_why(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    sent = send_study(
        gateway,
        tmp_path / "in",
        [SeriesSpec(1, 3), SeriesSpec(None, 9, modality="MR"), SeriesSpec(3, 9)],
    )
    uids = sent.series_uids
    with engine.connect() as connection:
        # The file of series 3 has gone from the spool: its header cannot be read.
        for path in connection.execute(select(Instance.file_path)).scalars():
            if uids[3] in path:
                (gateway.settings.spool_dir / path).unlink()
        choice = select_series(
            connection,
            gateway.settings.spool_dir,
            [*uids.values(), "1.2.999"],
            SETTINGS,
        )
        empty = select_series(connection, gateway.settings.spool_dir, [], SETTINGS)
    assert choice.series_instance_uid is None
    assert choice.reason == (
        "none of 4 candidate series qualifies (modality in ['CT'], 8-2000 instances, axial)"
    )
    unreadable = [r for r in choice.rejected if r.startswith("series 3: ")]
    assert len(unreadable) == 1
    assert unreadable[0].startswith("series 3: header of ")
    assert unreadable[0].endswith("unreadable (FileNotFoundError)")
    assert set(choice.rejected) - set(unreadable) == {
        "series 1.2.999: expected in the database, found no such series",
        "series 1: 3 instances, fewer than min_slices 8",
        f"series {uids[None]}: modality 'MR', not in ['CT']",
    }
    assert (empty.series_instance_uid, empty.reason) == (None, "no candidate series")


@pytest.mark.parametrize(
    ("orientation", "tilt"),
    [
        ([1, 0, 0, 0, 1, 0], 0.0),
        ([-1, 0, 0, 0, 1, 0], 0.0),  # feet first
        ([1, 0, 0, 0, 0, -1], 90.0),  # coronal
        ([0, 1, 0, 0, 0, -1], 90.0),  # sagittal
        (tilted(25.0), 25.0),
    ],
)
def test_slice_tilt(orientation: list[float], tilt: float) -> None:
    assert slice_tilt_deg(orientation) == pytest.approx(tilt)


@pytest.mark.parametrize(
    ("orientation", "message"),
    [([1, 0, 0, 0, 1], "expected 6"), ([1, 0, 0, 2, 0, 0], "found parallel")],
)
def test_slice_tilt_refuses_unusable_orientation(orientation: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        slice_tilt_deg(orientation)
