"""One series' findings to its result objects in the forms the destinations take (SEG when
there is something to outline and SR always; presentation state, secondary captures, key
objects when there is a finding to show), written durably beside the spool."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from gateway.dicom.spool import Spool
from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import PipelineFindings
from gateway.results.config import ResultsSettings
from gateway.results.declared import ConvertibleFindings, declared
from gateway.results.forms import DEFAULT_FORMS, ResultForm
from gateway.results.identity import ResultUIDs
from gateway.results.key_objects import build_key_object_selection
from gateway.results.presentation_state import build_presentation_state
from gateway.results.report import build_measurement_report
from gateway.results.secondary_capture import build_secondary_captures
from gateway.results.segmentation import build_segmentation
from gateway.results.source import order_source_series
from gateway.results.stored import StoredResult
from gateway.results.viewer_findings import viewer_findings

VIEWER_FORMS = {
    ResultForm.PRESENTATION_STATE,
    ResultForm.SECONDARY_CAPTURE,
    ResultForm.KEY_OBJECTS,
}


@dataclass(frozen=True)
class ResultObject:
    kind: str  # "seg", "sr", "gsps", "sc" or "ko" (gateway.results.forms)
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
    forms: Iterable[ResultForm] = DEFAULT_FORMS,
) -> list[ResultObject]:
    """The objects of each form, as `description` (the findings' pipeline) declares: SEG (if
    any segment) then SR; a presentation state, secondary captures and a key object selection
    where there is a finding to show. Raises UnsupportedSeries with a reason code for a series
    the objects cannot describe."""
    wanted = set(forms)
    item = declared(findings, description)
    generic, description = item.findings, item.description
    source = order_source_series(
        source_datasets, generic.sop_instance_uids, description.accepts.geometry
    )
    uids = uids or ResultUIDs.for_findings(generic)
    objects: list[ResultObject] = []
    if ResultForm.SEG_SR in wanted:
        seg = build_segmentation(source, generic, uids, settings, description)
        sr = build_measurement_report(source, generic, seg, uids, settings, description)
        if seg is not None:
            objects.append(ResultObject("seg", seg[0]))
        objects.append(ResultObject("sr", sr))
    if not wanted & VIEWER_FORMS:
        return objects
    drawn = viewer_findings(source, item, settings)  # outlines found once for every form
    if ResultForm.PRESENTATION_STATE in wanted:
        gsps = build_presentation_state(source, item, uids, settings, drawn)
        if gsps is not None:
            objects.append(ResultObject("gsps", gsps))
    if ResultForm.SECONDARY_CAPTURE in wanted:
        captures = build_secondary_captures(source, item, uids, settings, drawn)
        objects.extend(ResultObject("sc", sc) for sc in captures)
    if ResultForm.KEY_OBJECTS in wanted:
        ko = build_key_object_selection(source, item, uids, settings, drawn)
        if ko is not None:
            objects.append(ResultObject("ko", ko))
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
