"""The inference client against a REAL tritonserver (started on free ports)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.inference_config import InferenceSettings
from gateway.phantom import LABEL_LUNG, LABEL_NODULE, Phantom, make_phantom, write_ct_series
from tests.inference.conftest import MODEL_REPOSITORY, start_triton
from workers.inference import (
    DeadlineExceededError,
    InferenceClient,
    PermanentInferenceError,
    TransientInferenceError,
    TritonRunner,
)
from workers.inference.client import segmentation_spec
from workers.inference.runners import Deadline, ModelSpec
from workers.triton_server import TritonServer


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * np.count_nonzero(pred & truth) / (pred.sum() + truth.sum()))


def check_against_truth(labels: np.ndarray, phantom: Phantom, findings) -> None:  # type: ignore[no-untyped-def]
    assert dice(labels == LABEL_LUNG, phantom.labels == LABEL_LUNG) >= 0.95
    assert dice(labels == LABEL_NODULE, phantom.labels == LABEL_NODULE) >= 0.85
    assert findings.nodule_probability > 0.5
    matched = set()
    for truth in phantom.nodules:
        centre = np.array(phantom.index_to_patient(truth.center_index))
        best = min(
            findings.nodules,
            key=lambda f: float(np.linalg.norm(np.array(f.centroid_patient_mm) - centre)),
        )
        matched.add(best.index)
        assert np.linalg.norm(np.array(best.centroid_patient_mm) - centre) < 2.5
        assert best.volume_mm3 == pytest.approx(truth.volume_mm3, rel=0.3)
        assert best.longest_diameter_mm == pytest.approx(truth.diameter_mm, abs=4.0)
    # false positives, if any, are few and small (a vessel fragment on one slice)
    extra = [f for f in findings.nodules if f.index not in matched]
    assert len(extra) <= 1 and all(f.volume_mm3 < 100 for f in extra), extra


def test_series_through_triton_matches_ground_truth(
    triton_settings: InferenceSettings, nodule_series: tuple[Phantom, list[Path]]
) -> None:
    phantom, paths = nodule_series
    with InferenceClient(triton_settings) as client:
        findings = client.analyse_files(list(reversed(paths)))
    assert findings.runner == "triton"
    assert findings.segmentation_model.name == "lung_nodule_unet"
    assert findings.segmentation_model.version == "1"
    assert findings.classification_model.version == "1"
    assert findings.labels.shape == phantom.shape
    check_against_truth(findings.labels, phantom, findings)


def test_triton_and_onnxruntime_agree(
    triton_settings: InferenceSettings,
    onnx_settings: InferenceSettings,
    nodule_series: tuple[Phantom, list[Path]],
) -> None:
    _, paths = nodule_series
    with InferenceClient(triton_settings) as a, InferenceClient(onnx_settings) as b:
        fa = a.analyse_files(paths)
        fb = b.analyse_files(paths)
    assert fb.runner == "onnxruntime"
    assert np.mean(fa.labels != fb.labels) < 1e-4
    assert fa.nodule_probability == pytest.approx(fb.nodule_probability, abs=1e-3)


def test_feet_first_and_negative_study(triton_settings: InferenceSettings, tmp_path: Path) -> None:
    phantom = make_phantom(
        6002,
        shape=(30, 512, 512),
        spacing=(3.0, 0.8, 0.8),
        n_nodules=2,
        nodule_diameter_mm=(12.0, 24.0),
    )
    paths = write_ct_series(phantom, tmp_path / "ff", head_first=False)
    negative = make_phantom(6003, shape=(30, 512, 512), spacing=(3.0, 0.8, 0.8), n_nodules=0)
    neg_paths = write_ct_series(negative, tmp_path / "neg")
    with InferenceClient(triton_settings) as client:
        ff = client.analyse_files(paths)
        neg = client.analyse_files(neg_paths)
    # sorted along the normal (0,0,-1): head to feet, columns stored mirrored
    check_against_truth(ff.labels[::-1, :, ::-1], phantom, ff)
    assert neg.nodule_probability < 0.5
    assert neg.nodules == []
    assert dice(neg.labels == LABEL_LUNG, negative.labels == LABEL_LUNG) >= 0.95


def test_unknown_model_fails_fast(triton_settings: InferenceSettings) -> None:
    settings = triton_settings.model_copy(update={"segmentation_model": "no_such_model"})
    runner = TritonRunner(settings)
    t = time.monotonic()
    with pytest.raises(PermanentInferenceError, match="no_such_model"):
        runner.check_model(segmentation_spec(settings), Deadline(30))
    assert time.monotonic() - t < 5
    runner.close()


def test_wrong_version_and_shape_fail_fast(triton_settings: InferenceSettings) -> None:
    runner = TritonRunner(triton_settings)
    spec = segmentation_spec(triton_settings)
    bad_version = ModelSpec(**{**spec.__dict__, "version": "7"})
    with pytest.raises(PermanentInferenceError):
        runner.check_model(bad_version, Deadline(10))
    # shape the server rejects (client-side check passes: the spec itself is wrong)
    bad_shape = ModelSpec(**{**spec.__dict__, "input_shape": (1, 100, 100)})
    t = time.monotonic()
    with pytest.raises(PermanentInferenceError, match=r"(?i)shape|dims|unexpected"):
        runner.infer(bad_shape, np.zeros((2, 1, 100, 100), np.float32), Deadline(30))
    assert time.monotonic() - t < 5
    # and the client-side check names what it expected and found
    with pytest.raises(PermanentInferenceError, match=r"expected input \(N, \(1, 160, 160\)\)"):
        runner.infer(spec, np.zeros((2, 1, 64, 64), np.float32), Deadline(30))
    runner.close()


@pytest.fixture()
def own_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = start_triton(tmp_path)
    yield server
    server.stop()


def test_client_retries_while_triton_restarts(
    own_server: TritonServer,
    nodule_series: tuple[Phantom, list[Path]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    phantom, paths = nodule_series
    settings = InferenceSettings(
        triton_grpc_url=own_server.grpc_url,
        model_repository=MODEL_REPOSITORY,
        request_timeout_s=10,
        deadline_s=120,
        max_retries=30,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        circuit_failure_threshold=3,
        circuit_reset_s=1.0,
    )
    client = InferenceClient(settings)
    client.analyse_files(paths[:4])  # warm: works while up
    own_server.stop()
    restarted: list[TritonServer] = []

    def restart() -> None:
        time.sleep(3.0)
        restarted.append(
            TritonServer(
                MODEL_REPOSITORY,
                http_port=own_server.http_port,
                grpc_port=own_server.grpc_port,
                metrics_port=own_server.metrics_port,
                log_path=tmp_path / "restart.log",
            ).start()
        )

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="workers.inference.runners"):
            findings = client.analyse_files(paths)
        thread.join()
        assert any("retry" in r.getMessage() for r in caplog.records)
        check_against_truth(findings.labels, phantom, findings)
    finally:
        thread.join()
        for s in restarted:
            s.stop()
        client.close()


def test_client_gives_up_after_its_deadline(own_server: TritonServer) -> None:
    url = own_server.grpc_url
    own_server.stop()
    settings = InferenceSettings(
        triton_grpc_url=url,
        model_repository=MODEL_REPOSITORY,
        request_timeout_s=1.0,
        deadline_s=3.0,
        max_retries=100,
        backoff_initial_s=0.2,
        backoff_max_s=0.5,
    )
    volume_hu = np.full((2, 64, 64), -1000.0, np.float32)
    from tests.inference.test_postprocess import _volume

    vol = _volume((2, 64, 64), (1.0, 1.0, 1.0))
    vol = type(vol)(**{**vol.__dict__, "hu": volume_hu})
    t = time.monotonic()
    with InferenceClient(settings) as client, pytest.raises(TransientInferenceError) as info:
        client.analyse_volume(vol)
    elapsed = time.monotonic() - t
    assert isinstance(info.value, DeadlineExceededError)
    assert "deadline of 3 s" in str(info.value) and url in str(info.value)
    assert elapsed < 6.0
