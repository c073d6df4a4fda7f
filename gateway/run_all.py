"""`pacs-gateway run`: every part on one machine. The bundled Triton (when the inference
runner is Triton), one Celery worker process tree, the admin web UI, and `serve` (listener,
assembly, router, delivery) in this process; the broker is Redis when reachable, else
embedded (SQLite)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from contextlib import ExitStack

from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)


def run_everything(settings: GatewaySettings, cli_args: list[str]) -> int:
    from gateway.queue.broker import resolve_broker_url
    from gateway.service import serve

    broker_url = resolve_broker_url(settings)
    settings = settings.model_copy(
        update={"queue": settings.queue.model_copy(update={"broker_url": broker_url})}
    )
    LOGGER.info("broker: %s", broker_url.split("@")[-1])
    with ExitStack() as stack:
        if settings.inference.runner == "triton":
            from workers.triton_server import TritonServer

            triton = TritonServer.from_settings(
                settings.inference, log_path=settings.data_dir / "tritonserver.log"
            )
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(triton)
            LOGGER.info("Triton ready on %s", triton.grpc_url)
        env = {**os.environ, "PACS_GATEWAY_QUEUE__BROKER_URL": broker_url}
        for command in ("worker", "web"):
            child = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", command, *cli_args], env=env
            )
            stack.callback(_stop, child)
        from workers.prefetch.process import prefetching

        stack.enter_context(prefetching(settings))  # its own process, if prefetch.enabled
        serve(settings, on_ready=lambda ports: _say_ready(ports, cli_args))
    return 0


def _say_ready(ports: list[int], cli_args: list[str]) -> None:
    options = " ".join(cli_args)
    print(
        f"pacs-gateway is ready (DICOM ports {ports}; admin UI on the http_port, create a user "
        "first with `pacs-gateway create-admin NAME`). Send a phantom study through it and "
        f"check the SEG and SR:\n  .venv/bin/pacs-gateway selftest {options}".rstrip(),
        flush=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
