"""The key that signs session cookies: from the settings, else generated once and kept in
data_dir/web-secret (mode 0600), so sessions survive a restart."""

from __future__ import annotations

import os
import secrets

from gateway.settings import GatewaySettings


def secret_key(settings: GatewaySettings) -> str:
    configured = settings.web.secret_key
    if configured is not None:
        value = configured.get_secret_value()
        if len(value) < 32:
            raise ValueError(
                f"setting web.secret_key: expected at least 32 characters, found {len(value)}"
            )
        return value
    path = settings.data_dir / "web-secret"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text(encoding="ascii").strip()
        if len(value) < 32:
            raise ValueError(
                f"{path}: expected a secret of at least 32 characters, found {len(value)}"
            ) from None
        return value
    value = secrets.token_urlsafe(48)
    try:
        os.write(fd, value.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return value
