"""Container health check per role: `healthcheck.py listener|web|worker|triton` (exit 0:
healthy). Reads the same settings as the process it checks (--config, default
/etc/pacs-gateway/gateway.toml, plus PACS_GATEWAY_* variables and *_FILE secrets)."""

from __future__ import annotations

import socket
import sys
import urllib.request
from pathlib import Path

CONFIG = Path("/etc/pacs-gateway/gateway.toml")
HEALTHCHECK_AE = "HEALTHCHECK"


def _settings():  # type: ignore[no-untyped-def]
    from gateway.settings import load_settings

    return load_settings(CONFIG if CONFIG.is_file() else None)


def listener() -> str:
    """A C-ECHO (Verification) from HEALTHCHECK on this host: the listener accepted an
    association and answered 0x0000, so it is doing its job, not just holding a port."""
    from pynetdicom import AE

    settings = _settings()
    ae = AE(ae_title=HEALTHCHECK_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", settings.dicom.port, ae_title=settings.dicom.ae_title)
    if not assoc.is_established:
        raise SystemExit(f"expected an association on port {settings.dicom.port}, found none")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status.get("Status") != 0x0000:
        raise SystemExit(f"expected C-ECHO status 0x0000, found {status.get('Status')!r}")
    return f"C-ECHO on {settings.dicom.port}: 0x0000"


def web() -> str:
    settings = _settings()
    url = f"http://127.0.0.1:{settings.http_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as reply:
        if reply.status != 200:
            raise SystemExit(f"expected 200 from {url}, found {reply.status}")
    return f"{url}: 200"


def worker() -> str:
    """A Celery ping answered by a worker node of this container (hostname)."""
    from gateway.queue.app import make_celery

    app = make_celery(_settings())
    host = socket.gethostname()
    replies = app.control.ping(timeout=5.0)
    nodes = [name for reply in replies for name in reply if name.endswith(f"@{host}")]
    if not nodes:
        raise SystemExit(f"expected a worker node @{host} to answer a ping, found {replies}")
    return f"ping answered by {nodes}"


def triton(port: str = "8000") -> str:
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    with urllib.request.urlopen(url, timeout=5) as reply:
        if reply.status != 200:
            raise SystemExit(f"expected 200 from {url}, found {reply.status}")
    return f"{url}: 200"


ROLES = {"listener": listener, "web": web, "worker": worker, "triton": triton}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ROLES:
        raise SystemExit(f"usage: healthcheck.py {{{'|'.join(ROLES)}}} [args]")
    print(ROLES[sys.argv[1]](*sys.argv[2:]))
