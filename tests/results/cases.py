"""Source series and findings for the results tests: phantoms in several geometries and
pydicom's CT test file. Findings come from the phantom's ground-truth labels measured by the
real postprocessing, so the tests need no model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from gateway.phantom import make_phantom, write_ct_series
from workers.inference.findings import LABEL_LUNG, LABEL_NODULE, Findings, ModelIdentity
from workers.inference.postprocess import measure_nodules
from workers.inference.series import Volume, read_series

SEGMENTATION_MODEL = ModelIdentity("lung_nodule_unet", "1")
CLASSIFICATION_MODEL = ModelIdentity("nodule_cnn", "1")


@dataclass(frozen=True)
class Case:
    name: str
    paths: list[Path]
    findings: Findings
    volume: Volume


def findings_for(
    paths: list[Path], labels_in_file_order: NDArray[np.uint8], probability: float = 0.9
) -> Case:
    """Findings whose labels are `labels_in_file_order` (one label slice per path), put in
    the sorted order the inference client uses."""
    volume = read_series(paths)
    index_of = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): i
        for i, p in enumerate(paths)
    }
    order = [index_of[uid] for uid in volume.sop_instance_uids]
    labels = np.ascontiguousarray(labels_in_file_order[order])
    findings = Findings(
        labels=labels,
        sop_instance_uids=volume.sop_instance_uids,
        study_instance_uid=volume.study_instance_uid,
        series_instance_uid=volume.series_instance_uid,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        nodules=measure_nodules(labels, volume),
        nodule_probability=probability,
        segmentation_model=SEGMENTATION_MODEL,
        classification_model=CLASSIFICATION_MODEL,
        runner="ground-truth",
    )
    return Case(paths[0].parent.name, paths, findings, volume)


def phantom_case(
    out_dir: Path,
    seed: int,
    shape: tuple[int, int, int] = (20, 96, 96),
    spacing: tuple[float, float, float] | None = None,
    head_first: bool = True,
    n_nodules: int = 2,
) -> Case:
    phantom = make_phantom(seed, shape=shape, spacing=spacing, n_nodules=n_nodules)
    paths = write_ct_series(phantom, out_dir, head_first=head_first)
    labels = phantom.labels if head_first else phantom.labels[:, :, ::-1]
    return findings_for(paths, labels)


def tilted_case(out_dir: Path, seed: int, tilt_deg: float = 20.0) -> Case:
    """A phantom re-labelled as a gantry-tilted (oblique) series: columns tilted about the
    patient's x axis, slices stacked along the tilted normal."""
    case = phantom_case(out_dir, seed)
    t = math.radians(tilt_deg)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, math.cos(t), math.sin(t)])
    normal = np.cross(row, col)
    origin = np.array([-100.0, -120.0, -60.0])
    for path in case.paths:
        ds = pydicom.dcmread(path)
        k = int(ds.InstanceNumber)  # head first: instance 1 at the head, the last slice
        step = float(ds.SliceThickness)
        position = origin + (len(case.paths) - k) * step * normal
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.save_as(path)
    labels_in_file_order = np.stack(
        [
            case.findings.labels[case.findings.sop_instance_uids.index(uid)]
            for uid in _uids(case.paths)
        ]
    )
    return findings_for(case.paths, labels_in_file_order)


def pydicom_ct_case(out_dir: Path) -> Case:
    """pydicom's CT_small.dcm (one 128x128 slice, real scanner header) with a lung-like
    region and a small nodule drawn on it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "CT_small.dcm"
    path.write_bytes(Path(str(get_testdata_file("CT_small.dcm"))).read_bytes())
    yy, xx = np.mgrid[0:128, 0:128]
    labels = np.zeros((1, 128, 128), np.uint8)
    labels[0][((yy - 64) / 40.0) ** 2 + ((xx - 40) / 22.0) ** 2 <= 1] = LABEL_LUNG
    labels[0][(yy - 60) ** 2 + (xx - 45) ** 2 <= 16] = LABEL_NODULE
    return findings_for([path], labels)


def _uids(paths: list[Path]) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def projection_radiograph() -> Dataset:
    """A CR image header: no frame of reference, no patient geometry."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.Modality = "CR"
    for keyword in ("FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds
