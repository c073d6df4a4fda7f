"""Settings of inference (the gateway settings' `inference` section): where the models run
and how the workers call them. Here, not in the workers, because the gateway reads them too
(the Triton probes, `pacs-gateway triton`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from gateway.settings_section import SettingsSection


class InferenceSettings(SettingsSection):
    """How workers reach the models: Triton over gRPC, or onnxruntime in process."""

    runner: Literal["triton", "onnxruntime"] = Field(
        default="triton", description="Where the models run: Triton server or in process."
    )
    triton_grpc_url: str = Field(
        default="127.0.0.1:8001",
        description="Triton gRPC endpoint, host:port (one server; see triton_grpc_urls).",
    )
    triton_grpc_urls: list[str] = Field(
        default_factory=list,
        description="Several Triton servers serving the same models, host:port each: every "
        "worker process spreads its calls over them (fewest calls in flight, ties in turn) "
        "and fails over to the next on a transient error. Empty: triton_grpc_url alone.",
    )
    triton_failover_cooldown_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a server that failed a call is skipped while another is left.",
    )
    triton_shared_memory: bool = Field(
        default=True,
        description="Pass tensors through POSIX shared memory when Triton is on this host.",
    )
    triton_http_port: int = Field(default=8000, ge=1, le=65535)
    triton_grpc_port: int = Field(default=8001, ge=1, le=65535)
    triton_metrics_port: int = Field(default=8002, ge=1, le=65535)
    triton_model_config_name: str | None = Field(
        default=None, description="tritonserver --model-config-name (e.g. 'gpu'); None: CPU."
    )
    triton_startup_timeout_s: float = Field(default=120.0, gt=0)
    model_repository: Path = Field(
        default=Path(__file__).resolve().parents[1] / "triton_models",
        description="Triton model repository (also where the onnxruntime runner reads).",
    )
    segmentation_model: str | None = Field(
        default=None,
        description="lung_nodules only: another segmentation model than its pipeline file "
        "names (a site override, e.g. a model under test). None: the file's.",
    )
    segmentation_model_version: str | None = Field(
        default=None, description="Override of its version ('' means latest). None: the file's."
    )
    classification_model: str | None = Field(
        default=None, description="lung_nodules only: override of the classification model."
    )
    classification_model_version: str | None = Field(
        default=None, description="Override of its version. None: the file's."
    )
    batch_size: int = Field(default=16, ge=1, le=256, description="Slices per request.")
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Deadline of each gRPC call (client_timeout)."
    )
    deadline_s: float = Field(
        default=300.0, gt=0, description="Overall deadline of one study, retries included."
    )
    max_retries: int = Field(default=5, ge=0, description="Retries of a transient error.")
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=10.0, gt=0)
    backoff_multiplier: float = Field(default=2.0, ge=1.0)
    circuit_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failures that open the circuit."
    )
    circuit_reset_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit rejects calls."
    )
    onnx_threads: int = Field(default=1, ge=1, description="onnxruntime intra-op threads.")

    @field_validator("triton_grpc_urls")
    @classmethod
    def _host_port_each_once(cls, urls: list[str]) -> list[str]:
        for url in urls:
            host, _, port = url.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, found {url!r}")
        if len(set(urls)) != len(urls):
            raise ValueError(f"expected each server once, found {urls}")
        return urls

    @property
    def grpc_urls(self) -> list[str]:
        """The Triton servers to use: the list, or the single URL. Read here, not filled in
        by a validator, so that a copy with another `triton_grpc_url` points there."""
        return list(self.triton_grpc_urls) or [self.triton_grpc_url]
