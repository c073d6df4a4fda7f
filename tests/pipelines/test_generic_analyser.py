"""The generic analyser on a second file-only pipeline, in process (onnxruntime): argmax
segmentation with two labels and an image-level classification, written as SEG and SR by the
generic writers: the SR carries the declared finding with its probability."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pydicom.sr.codedict import codes

from gateway.inference_config import InferenceSettings
from gateway.phantom import make_phantom, write_ct_series
from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.registry import load_pipeline_file
from gateway.results.build import build_results, store_results
from gateway.results.config import ResultsSettings
from gateway.results.source import read_source_series
from tests.results.validation import dciodvfy_errors
from workers.inference.generic import DescribedAnalyser
from workers.inference.series import read_series

SIZE = 24
PIPELINE = f"""
name = "air_and_tissue"
version = "2"
title = "Air and tissue (test)"
[accepts]
modalities = ["CT"]
min_slices = 4
[[models]]
key = "seg"
name = "air_tissue"
input = "x"
output = "classes"
input_shape = [1, {SIZE}, {SIZE}]
output_shape = [3, {SIZE}, {SIZE}]
[models.preprocess]
size = {SIZE}
spacing_mm = 12.0
window = [-1000.0, 1000.0]
center = -300.0
scale = 100.0
[[models]]
key = "cls"
name = "tissue_present"
input = "x"
output = "p"
input_shape = [3, {SIZE}, {SIZE}]
output_shape = [1]
[models.preprocess]
size = {SIZE}
window = [-1000.0, 1000.0]
center = -300.0
scale = 100.0
context = "2.5d"
neighbours = 1
[segmentation]
model = "seg"
method = "argmax"
[[segments]]
label = 1
name = "air"
title = "Air"
category = {{ value = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}
type = {{ value = "39607008", scheme = "SCT", meaning = "Lung" }}
colour = [40, 200, 80]
measurements = ["volume"]
[[segments]]
label = 2
name = "tissue"
title = "Tissue"
category = {{ value = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}
type = {{ value = "85756007", scheme = "SCT", meaning = "Tissue" }}
colour = [235, 40, 40]
components = true
min_voxels = 2
measurements = ["volume", "longest_diameter"]
report = true
[classification]
model = "cls"
name = "tissue"
title = "Tissue classification"
finding = {{ value = "85756007", scheme = "SCT", meaning = "Tissue" }}
threshold = 0.5
[report]
procedure = {{ value = "24627-2", scheme = "LN", meaning = "CT Chest" }}
seg_series_description = "Air and tissue"
seg_content_label = "AIR_TISSUE"
seg_content_description = "Air and tissue (test)"
sr_series_description = "Air and tissue report"
contribution_description = "Test"
"""


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def make_models(repository: Path) -> None:
    # classes: background 0, air -8x (x < 0: below -300 HU), tissue 8x
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 1, 1, 1], [0.0, -8.0, 8.0])
    _save(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["classes"])],
            "air_tissue",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
            [helper.make_tensor_value_info("classes", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
            [weight],
        ),
        repository / "air_tissue" / "1" / "model.onnx",
    )
    # p = sigmoid(max over the slice of its centre channel)
    _save(
        helper.make_graph(
            [
                helper.make_node("GlobalMaxPool", ["x"], ["pooled"]),
                helper.make_node("ReduceMean", ["pooled"], ["m"], axes=[1, 2, 3], keepdims=0),
                helper.make_node("Unsqueeze", ["m", "one"], ["m1"]),
                helper.make_node("Sigmoid", ["m1"], ["p"]),
            ],
            "tissue_present",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
            [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 1])],
            [helper.make_tensor("one", TensorProto.INT64, [1], [1])],
        ),
        repository / "tissue_present" / "1" / "model.onnx",
    )


@pytest.fixture(scope="module")
def description(tmp_path_factory: pytest.TempPathFactory) -> PipelineDescription:
    path = tmp_path_factory.mktemp("pipelines") / "air_and_tissue.toml"
    path.write_text(PIPELINE)
    return load_pipeline_file(path)


def test_generic_segmentation_and_classification(
    tmp_path: Path, description: PipelineDescription
) -> None:
    make_models(tmp_path / "models")
    settings = InferenceSettings(runner="onnxruntime", model_repository=tmp_path / "models")
    phantom = make_phantom(5, shape=(6, 48, 48), spacing=(3.0, 6.0, 6.0), n_nodules=1)
    paths = write_ct_series(phantom, tmp_path / "ct")
    with DescribedAnalyser(settings, description) as analyser:
        findings = analyser.analyse_files(paths)
    assert [m.identity for m in findings.models] == ["air_tissue:1", "tissue_present:1"]
    assert set(np.unique(findings.labels)) <= {0, 1, 2}
    names = [s.key for s in findings.segments]
    assert names[0] == "air" and "tissue-1" in names
    (image,) = findings.image_findings
    assert image.name == "tissue" and image.present and image.probability > 0.9

    objects = build_results(
        read_source_series(paths), findings, ResultsSettings(), description=description
    )
    stored = {
        s.kind: tmp_path / "out" / s.relative_path for s in store_results(objects, tmp_path / "out")
    }
    for kind, iod in (("seg", "Segmentation"), ("sr", "Comprehensive3DSR")):
        assert dciodvfy_errors(stored[kind]) == (iod, []), kind
    seg = hd.seg.segread(stored["seg"])
    assert seg.get_segment_description(1).segment_label == "Air"
    assert seg.get_segment_description(2).segment_label == "Tissue 1"
    sr = hd.sr.srread(stored["sr"])
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Tissue 1"]  # air: report = false
    (group,) = sr.content.get_image_measurement_groups()
    assert group.tracking_identifier == "Tissue classification"
    (probability,) = group.get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(image.probability, abs=1e-4)
    (evaluation,) = group.get_qualitative_evaluations(
        name=hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    )
    assert evaluation.value == codes.SCT.Present


def test_generic_analyser_applies_a_declared_refine(tmp_path: Path) -> None:
    """`refine` on a segment redraws its components on the source grid from the CT values in
    the generic analyser too (the lung_nodules analyser is not the only one)."""
    threshold = 100.0
    refined_text = PIPELINE.replace(
        "min_voxels = 2\n",
        'min_voxels = 2\nrefine = { method = "threshold", threshold_hu = '
        f"{threshold}, margin_mm = 12.0, opening_mm = 0.0 }}\n",
    )
    assert refined_text != PIPELINE
    path = tmp_path / "refined.toml"
    path.write_text(refined_text)
    refined = load_pipeline_file(path)
    plain_path = tmp_path / "plain.toml"
    plain_path.write_text(PIPELINE)
    plain = load_pipeline_file(plain_path)
    make_models(tmp_path / "models")
    settings = InferenceSettings(runner="onnxruntime", model_repository=tmp_path / "models")
    phantom = make_phantom(5, shape=(6, 48, 48), spacing=(3.0, 6.0, 6.0), n_nodules=1)
    paths = write_ct_series(phantom, tmp_path / "ct")
    with DescribedAnalyser(settings, plain) as analyser:
        before = analyser.analyse_files(paths)
    with DescribedAnalyser(settings, refined) as analyser:
        after = analyser.analyse_volume(read_series(paths))
    volume = read_series(paths)
    tissue_before = before.labels == 2
    tissue_after = after.labels == 2
    # The model calls everything above -300 HU tissue; refined, only voxels at or above the
    # threshold stay (the rest becomes background), so the segment shrinks.
    assert tissue_after.sum() < tissue_before.sum()
    assert float(volume.hu[tissue_after].min()) >= threshold
    assert not np.any(after.labels[tissue_before & ~tissue_after] == 2)
