"""The generic analyser on a second file-only pipeline, in process (onnxruntime): argmax
segmentation with two labels and an image-level classification, written as SEG and SR by the
generic writers: the SR carries the declared finding with its probability."""

from __future__ import annotations

import tomllib
from pathlib import Path

import highdicom as hd
import numpy as np
import onnx
import pydicom
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper
from pydantic import ValidationError

from gateway.inference_config import InferenceSettings
from gateway.phantom import make_phantom, write_ct_series
from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.registry import load_pipeline_file
from gateway.results.build import build_results, store_results
from gateway.results.config import ResultsSettings
from gateway.results.reading import reported_image_findings
from gateway.results.source import read_source_series
from tests.results.ohif_rules import ohif_measurements
from tests.results.validation import dciodvfy_errors
from workers.inference.errors import PermanentInferenceError
from workers.inference.generic import DescribedAnalyser

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
    # No axes declared: the finding's outline on a slice lets OHIF load and draw it.
    (outline,) = sr.content.get_planar_roi_measurement_groups()
    assert outline.tracking_uid == groups[0].tracking_uid
    (measurement,) = ohif_measurements(pydicom.dcmread(stored["sr"]))
    assert measurement.problems == [] and measurement.labels == ["Volume", "Diameter"]
    assert sr.content.get_image_measurement_groups() == []
    (finding,) = reported_image_findings(sr)
    assert finding.finding == ("85756007", "SCT", "Tissue") and finding.present
    assert finding.probability == pytest.approx(image.probability, abs=1e-4)


def test_generic_analyser_applies_a_declared_refine(tmp_path: Path) -> None:
    """`refine` on a segment: calipers on the CT in the generic analyser too. The findings,
    their volumes and the label map (the SEG) stay the model's; the diameters are measured on
    the outline refined from the CT values."""
    threshold = 100.0
    refined_text = PIPELINE.replace(
        "min_voxels = 2\n",
        'min_voxels = 2\nrefine = { method = "threshold", threshold_hu = '
        f"{threshold}, margin_mm = 12.0, opening_mm = 0.0 }}\n",
    )
    assert refined_text != PIPELINE
    path = tmp_path / "refined.toml"
    path.write_text(refined_text)
    plain_path = tmp_path / "plain.toml"
    plain_path.write_text(PIPELINE)
    make_models(tmp_path / "models")
    settings = InferenceSettings(runner="onnxruntime", model_repository=tmp_path / "models")
    phantom = make_phantom(5, shape=(6, 48, 48), spacing=(3.0, 6.0, 6.0), n_nodules=1)
    paths = write_ct_series(phantom, tmp_path / "ct")
    with DescribedAnalyser(settings, load_pipeline_file(plain_path)) as analyser:
        before = analyser.analyse_files(paths)
    with DescribedAnalyser(settings, load_pipeline_file(path)) as analyser:
        after = analyser.analyse_files(paths)
    assert np.array_equal(before.labels, after.labels)  # the SEG is the model's
    tissue_before = {f.key: f for f in before.segments if f.name == "tissue"}
    tissue_after = {f.key: f for f in after.segments if f.name == "tissue"}
    assert tissue_before.keys() == tissue_after.keys() and tissue_before
    changed = 0
    for key, plain in tissue_before.items():
        refined = tissue_after[key]
        assert refined.measurement("volume") == plain.measurement("volume")
        d_plain = plain.measurement("longest_diameter")
        d_refined = refined.measurement("longest_diameter")
        assert d_plain is not None and d_refined is not None
        changed += d_refined.value != d_plain.value
    # The model calls everything above -300 HU tissue; on the CT only what is at or above
    # the threshold counts, so at least one component measures differently.
    assert changed >= 1


SLICES = 7  # not a multiple of SLAB: the last slab is padded
SLAB = 3
SEG_ONLY = """
name = "declared_{model}"
version = "1"
title = "Declared tensors (test)"
[accepts]
modalities = ["CT"]
[[models]]
key = "seg"
name = "{model}"
input = "x"
output = "{output}"
dtype = "{dtype}"
input_shape = {input_shape}
output_shape = {output_shape}
[models.preprocess]
size = {size}
spacing_mm = 12.0
window = [-1000.0, 1000.0]
center = -300.0
scale = 100.0
{extra}
[segmentation]
model = "seg"
method = "{method}"
threshold = 0.5
[[segments]]
label = 1
name = "air"
title = "Air"
category = {{ value = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}
type = {{ value = "39607008", scheme = "SCT", meaning = "Lung" }}
colour = [40, 200, 80]
[[segments]]
label = 2
name = "tissue"
title = "Tissue"
category = {{ value = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}
type = {{ value = "85756007", scheme = "SCT", meaning = "Tissue" }}
colour = [235, 40, 40]
[report]
procedure = {{ value = "24627-2", scheme = "LN", meaning = "CT Chest" }}
seg_series_description = "Declared"
seg_content_label = "DECLARED"
seg_content_description = "Declared tensors (test)"
sr_series_description = "Declared report"
contribution_description = "Test"
"""


def _seg_only(
    model: str,
    input_shape: list[int],
    output_shape: list[int],
    extra: str = "",
    dtype: str = "FP32",
    method: str = "argmax",
) -> PipelineDescription:
    text = SEG_ONLY.format(
        model=model,
        output="classes" if model == "air_tissue" else "y",  # the first test's model
        dtype=dtype,
        input_shape=input_shape,
        output_shape=output_shape,
        size=SIZE,
        extra=extra,
        method=method,
    )
    if method == "threshold":  # one label
        text = text[: text.index("[[segments]]\nlabel = 2")] + text[text.index("[report]") :]
    return PipelineDescription.model_validate(tomllib.loads(text))


def _labels(
    tmp_path: Path, description: PipelineDescription, paths: list[Path]
) -> NDArray[np.uint8]:
    settings = InferenceSettings(
        runner="onnxruntime", model_repository=tmp_path / "models", batch_size=4
    )
    with DescribedAnalyser(settings, description) as analyser:
        return analyser.analyse_files(paths).labels


def make_declared_models(repository: Path) -> None:
    """The air/tissue classifier three ways: 3D on slabs, FP16 tensors; and two threshold
    models: identity per slice (2D) and 'the next slice' (3D, a [0, 0, 1] kernel along z)."""
    f, h = TensorProto.FLOAT, TensorProto.FLOAT16
    w3 = helper.make_tensor("w", f, [3, 1, 1, 1, 1], [0.0, -8.0, 8.0])
    _save(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"])],
            "air_tissue_3d",
            [helper.make_tensor_value_info("x", f, ["N", 1, SLAB, SIZE, SIZE])],
            [helper.make_tensor_value_info("y", f, ["N", 3, SLAB, SIZE, SIZE])],
            [w3],
        ),
        repository / "air_tissue_3d" / "1" / "model.onnx",
    )
    w2 = helper.make_tensor("w", f, [3, 1, 1, 1], [0.0, -8.0, 8.0])
    _save(
        helper.make_graph(
            [
                helper.make_node("Cast", ["x"], ["x32"], to=f),
                helper.make_node("Conv", ["x32", "w"], ["y32"]),
                helper.make_node("Cast", ["y32"], ["y"], to=h),
            ],
            "air_tissue_fp16",
            [helper.make_tensor_value_info("x", h, ["N", 1, SIZE, SIZE])],
            [helper.make_tensor_value_info("y", h, ["N", 3, SIZE, SIZE])],
            [w2],
        ),
        repository / "air_tissue_fp16" / "1" / "model.onnx",
    )
    _save(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "same_slice",
            [helper.make_tensor_value_info("x", f, ["N", 1, SIZE, SIZE])],
            [helper.make_tensor_value_info("y", f, ["N", 1, SIZE, SIZE])],
        ),
        repository / "same_slice" / "1" / "model.onnx",
    )
    next_z = helper.make_tensor("w", f, [1, 1, 3, 1, 1], [0.0, 0.0, 1.0])
    _save(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 0, 0, 1, 0, 0])],
            "next_slice",
            [helper.make_tensor_value_info("x", f, ["N", 1, SLICES, SIZE, SIZE])],
            [helper.make_tensor_value_info("y", f, ["N", 1, SLICES, SIZE, SIZE])],
            [next_z],
        ),
        repository / "next_slice" / "1" / "model.onnx",
    )


@pytest.fixture()
def declared_series(tmp_path: Path) -> list[Path]:
    make_models(tmp_path / "models")
    make_declared_models(tmp_path / "models")
    phantom = make_phantom(5, shape=(SLICES, 48, 48), spacing=(3.0, 6.0, 6.0), n_nodules=2)
    return write_ct_series(phantom, tmp_path / "ct")


def test_3d_slabs_give_the_labels_of_the_2d_twin(
    tmp_path: Path, declared_series: list[Path]
) -> None:
    """A per-voxel 3D model on slabs of 3 over 7 slices (the last slab padded, its padding
    dropped, the slabs stitched back per slice) labels exactly as its 2D twin."""
    flat = _seg_only("air_tissue", [1, SIZE, SIZE], [3, SIZE, SIZE])
    slabs = _seg_only(
        "air_tissue_3d",
        [1, SLAB, SIZE, SIZE],
        [3, SLAB, SIZE, SIZE],
        extra=f'context = "3d"\nslab = {SLAB}',
    )
    expected = _labels(tmp_path, flat, declared_series)
    assert expected.shape[0] == SLICES and set(np.unique(expected)) == {1, 2}
    found = _labels(tmp_path, slabs, declared_series)
    assert found.shape == expected.shape
    assert np.array_equal(found, expected)


def test_fp16_tensors_give_the_labels_of_the_fp32_twin(
    tmp_path: Path, declared_series: list[Path]
) -> None:
    flat = _seg_only("air_tissue", [1, SIZE, SIZE], [3, SIZE, SIZE])
    half = _seg_only("air_tissue_fp16", [1, SIZE, SIZE], [3, SIZE, SIZE], dtype="FP16")
    expected = _labels(tmp_path, flat, declared_series)
    assert np.array_equal(_labels(tmp_path, half, declared_series), expected)
    # declared FP32, found FP16: the runner says so before any inference
    wrong = _seg_only("air_tissue_fp16", [1, SIZE, SIZE], [3, SIZE, SIZE], dtype="FP32")
    with pytest.raises(PermanentInferenceError, match=r"expected FP32 .* found FP16"):
        _labels(tmp_path, wrong, declared_series)


def test_slice_order_reverses_what_the_model_sees(
    tmp_path: Path, declared_series: list[Path]
) -> None:
    """'The next slice' is the next one along the normal by default (the reader's order:
    ascending, inferior to superior for this axial phantom) and the previous one reversed;
    the labels always come back in the reader's order."""
    same = _labels(
        tmp_path,
        _seg_only("same_slice", [1, SIZE, SIZE], [1, SIZE, SIZE], method="threshold"),
        declared_series,
    )
    assert same.any() and not all(np.array_equal(same[0], s) for s in same)
    shifted_up = np.zeros_like(same)
    shifted_up[:-1] = same[1:]
    shifted_down = np.zeros_like(same)
    shifted_down[1:] = same[:-1]
    assert not np.array_equal(shifted_up, shifted_down)

    def next_slice(order: str | None) -> NDArray[np.uint8]:
        extra = f'context = "3d"\nslab = {SLICES}'
        if order is not None:
            extra += f'\nslice_order = "{order}"'
        description = _seg_only(
            "next_slice",
            [1, SLICES, SIZE, SIZE],
            [1, SLICES, SIZE, SIZE],
            extra=extra,
            method="threshold",
        )
        return _labels(tmp_path, description, declared_series)

    assert np.array_equal(next_slice(None), shifted_up)
    assert np.array_equal(next_slice("inferior_to_superior"), shifted_up)
    assert np.array_equal(next_slice("against_normal"), shifted_down)
    assert np.array_equal(next_slice("superior_to_inferior"), shifted_down)


@pytest.mark.parametrize(
    ("input_shape", "output_shape", "extra", "message"),
    [
        ([1, SIZE, SIZE], [3, SIZE, SIZE], "slab = 4", "slab: expected none for context '2d'"),
        ([1, 4, SIZE, SIZE], [3, 4, SIZE, SIZE], 'context = "3d"', "expected slab"),
        (
            [1, 4, SIZE, SIZE],
            [3, 4, SIZE, SIZE],
            'context = "3d"\nslab = 5',
            r"expected input_shape \[1, 5, 24, 24\]",
        ),
        (
            [1, 4, SIZE, SIZE],
            [3, SIZE, SIZE],
            'context = "3d"\nslab = 4',
            r"expects output_shape \[classes, 4, 24, 24\]",
        ),
        (
            [1, 4, SIZE, SIZE],
            [2, 4, SIZE, SIZE],
            'context = "3d"\nslab = 4',
            r"expected output_shape \[3, 4, 24, 24\]",
        ),
    ],
)
def test_slab_and_shapes_are_validated_on_load(
    input_shape: list[int], output_shape: list[int], extra: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _seg_only("m", input_shape, output_shape, extra=extra)
