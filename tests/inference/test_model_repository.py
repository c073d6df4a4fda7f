"""The Triton model repository: configs parse, agree with the ONNX files and the client."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from gateway.inference_config import InferenceSettings
from tests.inference.conftest import MODEL_REPOSITORY, REPO
from workers.inference.client import classification_spec, segmentation_spec
from workers.triton_server import DEFAULT_TRITON_VENV, free_port

SPECS = {
    s.name: s
    for s in (segmentation_spec(InferenceSettings()), classification_spec(InferenceSettings()))
}


@pytest.mark.parametrize("config", ["config.pbtxt", "configs/gpu.pbtxt"])
@pytest.mark.parametrize("model", sorted(SPECS))
def test_config_matches_client_and_onnx(model: str, config: str) -> None:
    cfg = model_config_pb2.ModelConfig()
    text_format.Parse((MODEL_REPOSITORY / model / config).read_text(), cfg)
    spec = SPECS[model]
    assert cfg.name == model
    assert cfg.max_batch_size > 0 and cfg.HasField("dynamic_batching")
    kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    if config.startswith("configs/gpu"):
        assert cfg.backend == "onnxruntime"
        kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    else:
        assert cfg.backend == "python"
        assert (MODEL_REPOSITORY / model / "1" / "model.py").read_text() == (
            MODEL_REPOSITORY / "python_onnx_model.py"
        ).read_text()
    assert [g.kind for g in cfg.instance_group] == [kind]
    (inp,) = cfg.input
    (out,) = cfg.output
    assert (inp.name, tuple(inp.dims), inp.data_type) == (
        spec.input_name,
        spec.input_shape,
        model_config_pb2.TYPE_FP32,
    )
    assert (out.name, tuple(out.dims), out.data_type) == (
        spec.output_name,
        spec.output_shape,
        model_config_pb2.TYPE_FP32,
    )
    sess = ort.InferenceSession(
        str(MODEL_REPOSITORY / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in sess.get_inputs()] == [spec.input_name]
    assert [o.name for o in sess.get_outputs()] == [spec.output_name]
    size = (MODEL_REPOSITORY / model / "1" / "model.onnx").stat().st_size
    assert size < 10_000_000


def test_run_triton_forever_serves_until_signalled(tmp_path: Path) -> None:
    if not DEFAULT_TRITON_VENV.exists():
        pytest.fail("run `bash triton_models/setup_triton_env.sh` first")
    ports = [free_port() for _ in range(3)]
    code = (
        "import sys; from gateway.inference_config import InferenceSettings; "
        "from workers.triton_server import run_triton_forever; "
        f"sys.exit(run_triton_forever(InferenceSettings(triton_http_port={ports[0]}, "
        f"triton_grpc_port={ports[1]}, triton_metrics_port={ports[2]})))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 120
        seen = ""
        assert proc.stderr is not None
        while "tritonserver ready" not in seen:
            assert time.monotonic() < deadline, seen
            assert proc.poll() is None, seen
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                seen += proc.stderr.readline()
        assert f"grpc 127.0.0.1:{ports[1]}" in seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
