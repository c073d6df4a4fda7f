"""One series' findings to its result objects (SEG when there is something to outline, SR
always), written durably beside the spool."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from gateway.dicom.spool import Spool
from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import PipelineFindings
from gateway.results.config import ResultsSettings
from gateway.results.declared import ConvertibleFindings, declared
from gateway.results.identity import ResultUIDs
from gateway.results.report import build_measurement_report
from gateway.results.segmentation import build_segmentation
from gateway.results.source import order_source_series
from gateway.results.stored import StoredResult


@dataclass(frozen=True)
class ResultObject:
    kind: str  # "seg" or "sr"
    dataset: Dataset

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)


def build_results(
    source_datasets: Sequence[Dataset],
    findings: PipelineFindings | ConvertibleFindings,
    settings: ResultsSettings,
    uids: ResultUIDs | None = None,
    description: PipelineDescription | None = None,
) -> list[ResultObject]:
    """SEG (if any segment) then SR, as `description` (the findings' pipeline) declares.
    Raises UnsupportedSeries with a reason code for a series a SEG cannot describe."""
    item = declared(findings, description)
    generic, description = item.findings, item.description
    source = order_source_series(
        source_datasets, generic.sop_instance_uids, description.accepts.geometry
    )
    uids = uids or ResultUIDs.for_findings(generic)
    seg = build_segmentation(source, generic, uids, settings, description)
    sr = build_measurement_report(source, generic, seg, uids, settings, description)
    objects = [] if seg is None else [ResultObject("seg", seg[0])]
    objects.append(ResultObject("sr", sr))
    return objects


def encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def store_results(
    objects: Sequence[ResultObject],
    results_dir: Path,
    spool: Spool | None = None,
) -> list[StoredResult]:
    """Write each object durably (fsync) under results_dir/study/series/sop.dcm."""
    store = spool or Spool(results_dir, min_free_bytes=0)
    stored = []
    for obj in objects:
        ds = obj.dataset
        written = store.write(
            str(ds.StudyInstanceUID), obj.series_instance_uid, obj.sop_instance_uid, (encode(ds),)
        )
        stored.append(
            StoredResult(
                kind=obj.kind,
                sop_instance_uid=obj.sop_instance_uid,
                sop_class_uid=obj.sop_class_uid,
                series_instance_uid=obj.series_instance_uid,
                study_instance_uid=str(ds.StudyInstanceUID),
                relative_path=written.relative_path,
            )
        )
    return stored
