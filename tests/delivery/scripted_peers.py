"""Misbehaving destinations, scripted: a pynetdicom Storage SCP that refuses SOP classes,
answers a chosen status or never answers, and an HTTP server that answers STOW-RS badly."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    SegmentationStorage,
)

from tests.conftest import free_port


@dataclass
class ScriptedSCP:
    ae_title: str
    port: int
    received: list[str] = field(default_factory=list)


@contextmanager
def scripted_storage_scp(
    *,
    accept_seg: bool = True,
    status: int = 0x0000,
    hang_s: float = 0.0,
    ae_title: str = "SCRIPTED",
    port: int | None = None,
) -> Iterator[ScriptedSCP]:
    """A Storage SCP for SR (and SEG unless `accept_seg` is False) that answers `status`
    after `hang_s` seconds."""
    peer = ScriptedSCP(ae_title, port or free_port())
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True
    contexts = [Comprehensive3DSRStorage] + ([SegmentationStorage] if accept_seg else [])
    for sop_class in contexts:
        ae.add_supported_context(sop_class, ExplicitVRLittleEndian)

    def on_store(event: Any) -> int:
        if hang_s:
            time.sleep(hang_s)
        peer.received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    server = ae.start_server(
        ("127.0.0.1", peer.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield peer
    finally:
        server.shutdown()


@dataclass
class ScriptedStow:
    url: str
    requests: list[bytes] = field(default_factory=list)


@contextmanager
def scripted_stow_server(status: int, body: Any | None) -> Iterator[ScriptedStow]:
    """Answers every POST with `status` and `body` (JSON-encoded unless bytes)."""
    port = free_port()
    peer = ScriptedStow(f"http://127.0.0.1:{port}/dicom-web")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            peer.requests.append(self.rfile.read(length))
            payload = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
