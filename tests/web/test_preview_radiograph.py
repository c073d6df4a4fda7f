"""The study page's preview of an image pipeline's job (chest_xray_nodule): the source
radiograph, windowed and at preview size, with a circle in the declared colour around each
localised finding; none on a negative study. A phantom DX with a nodule, spooled and indexed
through the gateway's own code paths, with a job and its findings file as a worker leaves them."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flask.testing import FlaskClient
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import Engine, insert, select

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.dicom.header import read_header
from gateway.dicom.spool import Spool
from gateway.ingest import InstanceIndex, Sender
from gateway.models import Job, JobState, Study
from gateway.phantom.radiograph import Photometric, Radiograph, make_radiograph
from gateway.phantom.radiograph_dicom import radiograph_dataset
from gateway.pipelines.findings import ImageFinding, ModelIdentity, PipelineFindings, PointFinding
from gateway.settings import GatewaySettings
from gateway.web.preview import DEFAULT_LOCALISATION_COLOUR, PANEL, radiograph_grey
from workers.jobs.findings_store import save_findings

Client = Callable[[str | None], FlaskClient]
PIPELINE = "chest_xray_nodule"
SEED = 3
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _radiograph(photometric: Photometric, n_nodules: int) -> Radiograph:
    return make_radiograph(
        SEED,
        view_position="PA",
        photometric=photometric,
        mirrored=False,
        long_side_px=1100,
        n_nodules=n_nodules,
        nodule_diameter_mm=(22.0, 26.0),
    )


@pytest.fixture(scope="module")
def radiographs() -> dict[tuple[Photometric, int], Radiograph]:
    """The same phantom and exposure, stored as MONOCHROME1 and as MONOCHROME2."""
    return {(p, n): _radiograph(p, n) for p in ("MONOCHROME1", "MONOCHROME2") for n in (0, 1)}


def _split(path: Path) -> tuple[bytes, bytes]:
    """File meta and dataset body, as the listener receives them."""
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    end = 144 + group_length
    return data[:end], data[end:]


def store_radiograph_job(
    settings: GatewaySettings,
    engine: Engine,
    work: Path,
    radiograph: Radiograph,
    *,
    voi_window: bool = True,
    shift: tuple[float, float] = (0.0, 0.0),
) -> int:
    """Spool, index and assemble the DX; insert a delivered chest_xray_nodule job and save
    its findings: a point per phantom nodule (moved by `shift`, rows and columns)."""
    ds = radiograph_dataset(radiograph, modality="DX")
    if not voi_window:  # the preview falls back to the 1st/99th percentiles
        del ds.WindowCenter, ds.WindowWidth
    path = work / f"{ds.SOPInstanceUID}.dcm"
    work.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    meta, body = _split(path)
    header = read_header(body, EXPLICIT_LE)
    spool = Spool(settings.spool_dir, min_free_bytes=0, fsync=False)
    spooled = spool.write(
        header.study_instance_uid,
        header.series_instance_uid,
        header.sop_instance_uid,
        (meta, body),
    )
    InstanceIndex(engine).record_instance(header, spooled, Sender("MODALITY", "127.0.0.1"))
    StudyAssembler(engine, 0.001).complete_quiet_studies(now=utcnow() + timedelta(seconds=5))
    now = utcnow()
    with engine.begin() as connection:
        study_id = connection.execute(
            select(Study.id).where(Study.study_instance_uid == header.study_instance_uid)
        ).scalar_one()
        job_id: int = connection.execute(
            insert(Job)
            .values(
                study_id=study_id,
                study_instance_uid=header.study_instance_uid,
                rule_name="chest-xray",
                pipeline=PIPELINE,
                series_instance_uid=header.series_instance_uid,
                destinations=["pacs"],
                priority="routine",
                created_at=now - timedelta(seconds=30),
                updated_at=now,
                generation=1,
                model_key="chest_xray_nodule:1",
                state=JobState.DELIVERED,
                attempts=1,
                finished_at=now,
                summary={},
            )
            .returning(Job.id)
        ).scalar_one()
    points = tuple(
        PointFinding(
            name="nodule",
            index=i,
            sop_instance_uid=header.sop_instance_uid,
            row=n.row + shift[0],
            column=n.column + shift[1],
            radius_px=n.radius_px,
            probability=0.93,
        )
        for i, n in enumerate(radiograph.nodules, start=1)
    )
    save_findings(
        PipelineFindings(
            pipeline=PIPELINE,
            labels=np.zeros((1, 1, 1), dtype=np.uint8),
            sop_instance_uids=(header.sop_instance_uid,),
            study_instance_uid=header.study_instance_uid,
            series_instance_uid=header.series_instance_uid,
            frame_of_reference_uid="",
            segments=(),
            image_findings=(ImageFinding("nodule", 0.93 if points else 0.05, bool(points)),),
            models=(ModelIdentity("chest_xray_nodule", "1"),),
            runner="triton",
            point_findings=points,
        ),
        settings.jobs_dir / str(job_id) / "findings.npz",
    )
    return job_id


def _preview(client: FlaskClient, job_id: int) -> NDArray[np.int64]:
    response = client.get(f"/jobs/{job_id}/preview.png")
    assert response.status_code == 200 and response.mimetype == "image/png", response.data[:200]
    return np.asarray(Image.open(io.BytesIO(response.data)).convert("RGB"), dtype=np.int64)


def _circle_pixels(rgb: NDArray[np.int64]) -> NDArray[np.int64]:
    """(row, column) of the pixels in the localisation colour."""
    return np.argwhere((rgb == np.array(DEFAULT_LOCALISATION_COLOUR)).all(axis=2))


def _grey(rgb: NDArray[np.int64]) -> NDArray[np.int64]:
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0]


def _assert_not_uniform(grey: NDArray[np.int64]) -> None:
    low, high = np.percentile(grey, [5, 95])
    assert high - low > 80 and grey.std() > 25, (low, high, grey.std())


def _scaled(radiograph: Radiograph, shape: Sequence[int]) -> tuple[float, float, float]:
    """The first nodule's centre (row, column) and radius in preview pixels."""
    nodule = radiograph.nodules[0]
    rows, columns = radiograph.pixels.shape
    row_scale, column_scale = shape[0] / rows, shape[1] / columns
    return (
        (nodule.row + 0.5) * row_scale - 0.5,
        (nodule.column + 0.5) * column_scale - 0.5,
        nodule.radius_px * min(row_scale, column_scale),
    )


def test_preview_circles_the_nodule_on_the_windowed_radiograph(
    client_as: Client,
    settings: GatewaySettings,
    engine: Engine,
    tmp_path: Path,
    radiographs: dict[tuple[Photometric, int], Radiograph],
) -> None:
    radiograph = radiographs[("MONOCHROME2", 1)]
    assert len(radiograph.nodules) == 1
    job_id = store_radiograph_job(settings, engine, tmp_path / "dx", radiograph)
    rgb = _preview(client_as("viewer"), job_id)
    rows, columns = radiograph.pixels.shape
    assert max(rgb.shape[:2]) == PANEL
    assert abs(rgb.shape[0] / rgb.shape[1] - rows / columns) < 0.01
    circle = _circle_pixels(rgb)
    assert len(circle) > 20, len(circle)
    row, column, radius = _scaled(radiograph, rgb.shape)
    centre = circle.mean(axis=0)
    assert abs(centre[0] - row) < 2.0 and abs(centre[1] - column) < 2.0, (centre, row, column)
    distance = np.hypot(circle[:, 0] - row, circle[:, 1] - column)
    assert abs(float(np.median(distance)) - radius) < 2.0, (np.median(distance), radius)
    assert distance.max() < radius + 3.0
    # Everything else is the grey radiograph, windowed so that it shows the chest.
    mask = np.ones(rgb.shape[:2], dtype=bool)
    mask[circle[:, 0], circle[:, 1]] = False
    grey = rgb[mask]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    _assert_not_uniform(grey[:, 0])


@pytest.mark.parametrize("voi_window", [True, False], ids=["voi-window", "percentiles"])
def test_monochrome1_and_monochrome2_give_the_same_picture(
    client_as: Client,
    settings: GatewaySettings,
    engine: Engine,
    tmp_path: Path,
    radiographs: dict[tuple[Photometric, int], Radiograph],
    voi_window: bool,
) -> None:
    client = client_as("viewer")
    pictures = {}
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        radiograph = radiographs[(photometric, 0)]
        job_id = store_radiograph_job(
            settings, engine, tmp_path / photometric, radiograph, voi_window=voi_window
        )
        pictures[photometric] = _grey(_preview(client, job_id))
    one, two = pictures["MONOCHROME1"], pictures["MONOCHROME2"]
    assert one.shape == two.shape
    assert np.abs(one - two).max() <= 1, np.abs(one - two).max()
    _assert_not_uniform(two)
    # Bone and soft tissue bright, air dark: the body's middle column is brighter than the
    # outermost columns (MONOCHROME1 stores it the other way round).
    middle = two[:, two.shape[1] // 2 - 5 : two.shape[1] // 2 + 5].mean()
    edges = np.concatenate([two[:, :5], two[:, -5:]]).mean()
    assert middle > edges + 40, (middle, edges)


def test_without_a_voi_window_the_1st_and_99th_percentiles_are_black_and_white(
    tmp_path: Path, radiographs: dict[tuple[Photometric, int], Radiograph]
) -> None:
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        ds = radiograph_dataset(radiographs[(photometric, 1)], modality="DX")
        del ds.WindowCenter, ds.WindowWidth
        path = tmp_path / f"{photometric}.dcm"
        ds.save_as(path, enforce_file_format=True)
        grey = radiograph_grey(pydicom.dcmread(path))
        black, white = float((grey <= 0.0).mean()), float((grey >= 1.0).mean())
        assert 0.005 < black < 0.02 and 0.005 < white < 0.02, (photometric, black, white)


def test_negative_study_preview_has_no_circle(
    client_as: Client,
    settings: GatewaySettings,
    engine: Engine,
    tmp_path: Path,
    radiographs: dict[tuple[Photometric, int], Radiograph],
) -> None:
    radiograph = radiographs[("MONOCHROME1", 0)]
    assert radiograph.nodules == []
    job_id = store_radiograph_job(settings, engine, tmp_path / "dx", radiograph)
    rgb = _preview(client_as("viewer"), job_id)
    assert len(_circle_pixels(rgb)) == 0
    _assert_not_uniform(_grey(rgb))
