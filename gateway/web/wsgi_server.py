"""`pacs-gateway web`: the admin UI and DICOMweb served by gunicorn (gthread workers).

gunicorn, not waitress: waitress reads a whole request body (to memory or a temporary file)
before the application sees it, so a STOW-RS would be spooled twice and an unauthenticated
client could fill the temporary disk; gunicorn hands the socket's stream to the application,
which checks the token and the size limit before it reads (gateway/dicomweb/). TLS is
terminated in front of it by a reverse proxy (docs/containers.md)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from gateway.settings import GatewaySettings


class GatewayWSGIServer(BaseApplication):
    """One gunicorn arbiter; each worker process builds its own engine and app after the
    fork (a database connection must never be shared across a fork)."""

    def __init__(self, settings: GatewaySettings, host: str) -> None:
        self.settings = settings
        self.host = host
        super().__init__()

    def load_config(self) -> None:
        web = self.settings.web
        options: dict[str, Any] = {
            "bind": f"{self.host}:{self.settings.http_port}",
            "workers": web.workers,
            "threads": web.threads,
            "worker_class": "gthread",
            # gthread workers notify the arbiter from their main loop, so long uploads and
            # downloads are not cut; this only catches a hung worker process
            "timeout": 120,
            "graceful_timeout": 30,
            "keepalive": 5,
            "forwarded_allow_ips": web.forwarded_allow_ips,
            "accesslog": None,  # every DICOMweb request is audited; UI paths carry ids
            "errorlog": "-",
            "loglevel": self.settings.log_level.lower(),
            "proc_name": "pacs-gateway-web",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from gateway.database import make_engine
        from gateway.web import create_app

        return create_app(self.settings, make_engine(self.settings))


def serve_web(settings: GatewaySettings, host: str) -> None:
    """Serve until SIGTERM or SIGINT (graceful: requests in flight finish)."""
    GatewayWSGIServer(settings, host).run()
