"""A job's findings on disk, so a rerun of the task skips inference that already finished."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from workers.inference.findings import Findings, ModelIdentity, NoduleFinding


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_findings(findings: Findings, path: Path) -> None:
    """Write atomically: a temporary file, fsync, rename; a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "sop_instance_uids": list(findings.sop_instance_uids),
        "study_instance_uid": findings.study_instance_uid,
        "series_instance_uid": findings.series_instance_uid,
        "frame_of_reference_uid": findings.frame_of_reference_uid,
        "nodules": [asdict(n) for n in findings.nodules],
        "nodule_probability": findings.nodule_probability,
        "segmentation_model": asdict(findings.segmentation_model),
        "classification_model": asdict(findings.classification_model),
        "runner": findings.runner,
        "lung_volume_mm3": findings.lung_volume_mm3,
        "timings_s": findings.timings_s,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.savez_compressed(handle, labels=findings.labels, meta=np.array(json.dumps(meta)))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load_findings(path: Path) -> Findings:
    with np.load(path, allow_pickle=False) as data:
        labels = data["labels"]
        meta = json.loads(str(data["meta"]))
    nodules = [
        NoduleFinding(
            **{
                **n,
                "centroid_patient_mm": tuple(n["centroid_patient_mm"]),
                "centroid_index": tuple(n["centroid_index"]),
                "slice_range": tuple(n["slice_range"]),
            }
        )
        for n in meta["nodules"]
    ]
    return Findings(
        labels=labels,
        sop_instance_uids=tuple(meta["sop_instance_uids"]),
        study_instance_uid=meta["study_instance_uid"],
        series_instance_uid=meta["series_instance_uid"],
        frame_of_reference_uid=meta["frame_of_reference_uid"],
        nodules=nodules,
        nodule_probability=float(meta["nodule_probability"]),
        segmentation_model=ModelIdentity(**meta["segmentation_model"]),
        classification_model=ModelIdentity(**meta["classification_model"]),
        runner=meta["runner"],
        lung_volume_mm3=float(meta["lung_volume_mm3"]),
        timings_s=dict(meta["timings_s"]),
    )


def summarise(findings: Findings) -> dict[str, object]:
    """What the job row keeps: measurements and probability, UIDs; no patient data."""
    return {
        "nodule_count": len(findings.nodules),
        "nodules": [
            {
                "index": n.index,
                "volume_mm3": round(n.volume_mm3, 1),
                "longest_diameter_mm": round(n.longest_diameter_mm, 1),
            }
            for n in findings.nodules
        ],
        "nodule_probability": round(findings.nodule_probability, 4),
        "lung_volume_mm3": round(findings.lung_volume_mm3, 1),
        "segmentation_model": f"{findings.segmentation_model.name}:"
        f"{findings.segmentation_model.version}",
        "classification_model": f"{findings.classification_model.name}:"
        f"{findings.classification_model.version}",
        "runner": findings.runner,
    }
