"""A pipeline made of files alone: a new ONNX network built here, its Triton model folder and
its pipeline file in temporary folders; the real Triton serves it, a CT study goes through the
gateway (listener, router, job, worker) and comes out as a SEG with the declared segments,
codes and colours, dciodvfy clean. No code of the gateway names this pipeline."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sqlalchemy import select

from gateway.database import make_engine
from gateway.migrate import upgrade
from gateway.models import Job, JobState
from gateway.phantom import make_phantom, write_ct_series
from gateway.pipelines.listing import list_pipelines
from gateway.pipelines.registry import PipelineFileError, load_pipeline_file
from tests.conftest import free_port, make_settings, wait_for_port
from tests.pipeline.harness import Process, RedisServer, wait_until
from tests.results.validation import dciodvfy_errors
from tests.scu import send_files
from workers.triton_server import DEFAULT_TRITON_VENV, TritonServer

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
PIPELINE = f"""
name = "soft_tissue"
version = "0.1"
title = "Soft tissue by threshold (test)"

[accepts]
modalities = ["CT"]
geometry = "volume"
min_slices = 4
max_slices = 500

[[models]]
key = "segmentation"
name = "tissue_threshold"
version = "1"
input = "image"
output = "mask"
input_shape = [1, {SIZE}, {SIZE}]
output_shape = [1, {SIZE}, {SIZE}]
[models.preprocess]
size = {SIZE}
window = [-1000.0, 1000.0]
center = -300.0
scale = 100.0
context = "2d"

[segmentation]
model = "segmentation"
method = "threshold"
threshold = 0.5
threshold_label = 1

[[segments]]
label = 1
name = "tissue"
title = "Soft tissue"
category = {{ value = "91723000", scheme = "SCT", meaning = "Anatomical Structure" }}
type = {{ value = "85756007", scheme = "SCT", meaning = "Tissue" }}
colour = [200, 120, 40]
components = true
min_voxels = 4
measurements = ["volume", "longest_diameter"]
report = true

[report]
procedure = {{ value = "24627-2", scheme = "LN", meaning = "CT Chest" }}
seg_series_description = "Soft tissue (test)"
seg_content_label = "TISSUE"
seg_content_description = "Soft tissue by threshold"
sr_series_description = "Soft tissue report (test)"
contribution_description = "Threshold segmentation (test)"
"""

CONFIG = f"""
name: "tissue_threshold"
backend: "python"
max_batch_size: 16
input [ {{ name: "image", data_type: TYPE_FP32, dims: [ 1, {SIZE}, {SIZE} ] }} ]
output [ {{ name: "mask", data_type: TYPE_FP32, dims: [ 1, {SIZE}, {SIZE} ] }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
"""


def threshold_network(path: Path) -> None:
    """sigmoid(8 * x) by a 1x1 convolution: above 0.5 where the normalised value is > 0,
    i.e. HU above -300 (soft tissue and nodules, not lung or air)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [8.0])
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1], [0.0])
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["mask"]),
        ],
        "tissue_threshold",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what the onnxruntime of the Triton environment reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def model_repository(root: Path) -> Path:
    folder = root / "tissue_threshold"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(CONFIG)
    shutil.copy(REPO / "triton_models" / "python_onnx_model.py", folder / "1" / "model.py")
    threshold_network(folder / "1" / "model.onnx")
    return root


def test_a_bad_pipeline_file_says_field_expected_and_found(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(PIPELINE.replace("colour = [200, 120, 40]", "colour = [200, 120, 400]"))
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline_file(bad)
    message = str(caught.value)
    assert str(bad) in message and "segments.0" in message and "400" in message


def test_file_only_pipeline_end_to_end(tmp_path: Path) -> None:
    if not DEFAULT_TRITON_VENV.exists():
        pytest.fail(f"expected the Triton environment at {DEFAULT_TRITON_VENV}, found none")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "soft_tissue.toml").write_text(PIPELINE)
    repository = model_repository(tmp_path / "models")
    triton = TritonServer(
        repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=tmp_path / "tritonserver.log",
        startup_timeout_s=120,
    ).start()
    redis = RedisServer(tmp_path, free_port())
    redis.start()
    settings = make_settings(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'gateway.db'}",
        pipelines={"dirs": [str(pipelines)]},
        routing={
            "rules": [
                {
                    "name": "ct",
                    "conditions": [{"attribute": "modality", "value": "CT"}],
                    "pipeline": "soft_tissue",
                }
            ]
        },
        inference={
            "runner": "triton",
            "triton_grpc_url": triton.grpc_url,
            "model_repository": str(repository),
            "deadline_s": 60,
        },
        queue={"broker_url": redis.url, "router_poll_interval_s": 0.3},
    )
    engine = make_engine(settings)
    upgrade(settings, engine=engine)
    processes = [
        Process("serve", settings, tmp_path / "gateway.log").start(),
        Process("worker", settings, tmp_path / "worker.log").start(),
    ]
    try:
        wait_for_port(settings.dicom.port)
        phantom = make_phantom(7, shape=(8, 64, 64), spacing=(2.5, 5.0, 5.0), n_nodules=1)
        paths = write_ct_series(phantom, tmp_path / "study")
        assert send_files(settings.dicom.port, paths) == [0] * len(paths)

        def finished() -> object:
            with engine.connect() as connection:
                job = connection.execute(select(Job)).first()
            return (
                job
                if job is not None and job.state in (JobState.DELIVERED, JobState.FAILED)
                else None
            )

        job = wait_until(finished, 90, "the job finished")
        logs = "\n".join(p.log_tail() for p in processes)
        assert job.state == JobState.DELIVERED, (job.last_error, logs)
        assert job.pipeline == "soft_tissue"
        assert job.model_key == "tissue_threshold:1"
        results = {
            r["kind"]: settings.results_dir / r["relative_path"] for r in job.summary["results"]
        }
        assert set(results) == {"seg", "sr"}
        largest = job.summary["findings"][0]
        assert largest["segment"] == "tissue-1"
        assert largest["measurements"]["volume (mm3)"] > 0
        assert largest["measurements"]["longest_diameter (mm)"] > 0
        for kind, iod in (("seg", "Segmentation"), ("sr", "Comprehensive3DSR")):
            assert dciodvfy_errors(results[kind]) == (iod, []), kind
        seg = hd.seg.segread(results["seg"])
        assert seg.ContentLabel == "TISSUE"
        assert seg.SeriesDescription == "Soft tissue (test)"
        numbers = list(seg.segment_numbers)
        assert len(numbers) >= 1
        expected_lab = hd.color.CIELabColor.from_rgb(200, 120, 40).value
        for number in numbers:
            d = seg.get_segment_description(number)
            assert d.segmented_property_type == hd.sr.CodedConcept("85756007", "SCT", "Tissue")
            assert d.segmented_property_category == hd.sr.CodedConcept(
                "91723000", "SCT", "Anatomical Structure"
            )
            assert d.segment_label == f"Soft tissue {number}"
            assert tuple(int(v) for v in d.RecommendedDisplayCIELabValue) == expected_lab
            assert d.algorithm_identification[0].AlgorithmName == "tissue_threshold"
        sr = hd.sr.srread(results["sr"])
        groups = sr.content.get_volumetric_roi_measurement_groups()
        assert len(groups) == len(numbers)
        # Tissue and nodules are outlined, lung and air are not.
        pixels = seg.pixel_array
        share = float(np.count_nonzero(pixels)) / (len(paths) * 64 * 64)
        assert 0.05 < share < 0.9, share
        # `pacs-gateway pipelines` sees the file-only pipeline and its model served.
        listing = io.StringIO()
        list_pipelines(settings, listing)
        assert "soft_tissue 0.1: Soft tissue by threshold (test)" in listing.getvalue()
        assert f"origin: file {pipelines / 'soft_tissue.toml'}" in listing.getvalue()
        assert "model segmentation: tissue_threshold:1 (served)" in listing.getvalue()
    finally:
        for process in processes:
            process.stop()
        redis.stop()
        triton.stop()
        engine.dispose()
