"""The exported chest_xray_nodule model on fresh synthetic radiographs, through onnxruntime.

Seeds 15100-15111 were never used to train, calibrate or design the model (see its card).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from gateway.phantom.radiograph import Radiograph, make_radiograph
from tests.inference.conftest import MODEL_REPOSITORY
from workers.inference.chest_xray import (
    CXR_MAP_SIZE,
    CXR_SIZE,
    CXR_THRESHOLD,
    image_probability,
    radiograph_findings,
    to_radiograph_input,
)

MODEL_DIR = MODEL_REPOSITORY / "chest_xray_nodule"
HIT_MARGIN_MM = 5.0


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(
        str(MODEL_DIR / "1" / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )


def _score(session: ort.InferenceSession, rad: Radiograph) -> tuple[float, list[float]]:
    """Image probability and, per true nodule, the distance (mm) to the nearest finding
    minus the nodule's radius."""
    x, grid = to_radiograph_input(
        rad.pixels, rad.pixel_spacing, rad.exposure.photometric_interpretation
    )
    score_map = session.run(None, {"image": x})[0][0, 0]
    found = radiograph_findings(score_map, grid, CXR_THRESHOLD)
    sp = rad.geometry.spacing_mm
    gaps = [
        min(
            (np.hypot(f.row - n.row, f.column - n.column) * sp - n.radius_px * sp for f in found),
            default=np.inf,
        )
        for n in rad.nodules
    ]
    return image_probability(score_map), gaps


def test_positives_score_higher_and_findings_land_on_the_nodules(
    session: ort.InferenceSession,
) -> None:
    positives, negatives = [], []
    for seed in range(15100, 15106):
        # full-size radiographs, PA/AP, MONOCHROME1/2, size and spacing drawn from the seed
        rad = make_radiograph(seed, n_nodules=1, nodule_diameter_mm=(12.0, 30.0))
        assert rad.has_nodule
        p, gaps = _score(session, rad)
        positives.append(p)
        assert gaps[0] <= HIT_MARGIN_MM, f"seed {seed}: no finding on the nodule ({gaps})"
    for seed in range(15106, 15112):
        rad = make_radiograph(seed, n_nodules=0)
        negatives.append(_score(session, rad)[0])
    assert min(positives) > max(negatives), (positives, negatives)
    assert min(positives) >= CXR_THRESHOLD > max(negatives), (positives, negatives)


def test_photometric_interpretation_does_not_change_the_answer(
    session: ort.InferenceSession,
) -> None:
    m1 = make_radiograph(15100, photometric="MONOCHROME1", n_nodules=1, long_side_px=800)
    m2 = make_radiograph(15100, photometric="MONOCHROME2", n_nodules=1, long_side_px=800)
    assert _score(session, m1)[0] == pytest.approx(_score(session, m2)[0], abs=1e-5)


@pytest.mark.parametrize("config", ["config.pbtxt", "configs/gpu.pbtxt"])
def test_config_matches_onnx_and_contract(config: str, session: ort.InferenceSession) -> None:
    cfg = model_config_pb2.ModelConfig()
    text_format.Parse((MODEL_DIR / config).read_text(), cfg)
    assert cfg.name == "chest_xray_nodule"
    assert cfg.max_batch_size > 0 and cfg.HasField("dynamic_batching")
    if config == "config.pbtxt":
        assert cfg.backend == "python"
        assert (MODEL_DIR / "1" / "model.py").read_text() == (
            MODEL_REPOSITORY / "python_onnx_model.py"
        ).read_text()
    else:
        assert cfg.backend == "onnxruntime"
    (inp,) = cfg.input
    (out,) = cfg.output
    assert (inp.name, tuple(inp.dims), inp.data_type) == (
        "image",
        (1, CXR_SIZE, CXR_SIZE),
        model_config_pb2.TYPE_FP32,
    )
    assert (out.name, tuple(out.dims), out.data_type) == (
        "score_map",
        (1, CXR_MAP_SIZE, CXR_MAP_SIZE),
        model_config_pb2.TYPE_FP32,
    )
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [
        ("image", [1, CXR_SIZE, CXR_SIZE])
    ]
    assert [(o.name, o.shape[1:]) for o in session.get_outputs()] == [
        ("score_map", [1, CXR_MAP_SIZE, CXR_MAP_SIZE])
    ]
    assert (MODEL_DIR / "1" / "model.onnx").stat().st_size < 2_000_000
    batch = np.zeros((3, 1, CXR_SIZE, CXR_SIZE), np.float32)
    out_map = session.run(None, {"image": batch})[0]
    assert out_map.shape == (3, 1, CXR_MAP_SIZE, CXR_MAP_SIZE)
    assert ((out_map >= 0) & (out_map <= 1)).all()
