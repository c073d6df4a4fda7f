"""Settings of the admin web UI (nested in the gateway settings as ``web``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from gateway.settings_section import SettingsSection


class WebSettings(SettingsSection):
    """The admin web UI: where it listens, its session cookie and login limits."""

    host: str = Field(
        default="127.0.0.1",
        description="Address `pacs-gateway web` binds; the port is `http_port`.",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Web server (gunicorn) processes; more for more CPU."
    )
    threads: int = Field(
        default=8, ge=1, le=256, description="Threads per web server process (requests at once)."
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Reverse proxies whose X-Forwarded-For/-Proto are trusted (comma list, "
        "'*' for any): the proxy that terminates TLS in front of the web server.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs session cookies. Unset: generated once and kept in "
        "data_dir/web-secret (mode 0600).",
    )
    session_cookie_secure: bool = Field(
        default=True,
        description="Send the session cookie over HTTPS only. Turn off only for local http.",
    )
    session_lifetime_s: int = Field(default=8 * 3600, ge=60, description="Idle sign-out.")
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins per username and address in the window; also the limit "
        "of a trusted browser (one that signed in as that user before).",
    )
    login_max_failures_per_address: int = Field(
        default=20,
        ge=1,
        description="Failed logins per address over all usernames in the window (slows a "
        "spray over many usernames).",
    )
    login_max_failures_per_user: int = Field(
        default=20,
        ge=1,
        description="Failed logins per username over all addresses in the window (slows a "
        "guess spread over many addresses). Trusted browsers are exempt.",
    )
    login_window_s: int = Field(default=300, ge=1, description="Login failure window.")
    login_trusted_browser_s: int = Field(
        default=30 * 24 * 3600,
        ge=0,
        description="How long a browser that signed in stays trusted for that user: its "
        "failures count on their own, so others cannot lock it out. 0: off.",
    )
    min_password_length: int = Field(default=12, ge=8)
    metrics_public: bool = Field(
        default=True,
        description="Serve /metrics without login (counts only, no patient data), for "
        "Prometheus; off: viewers and above only.",
    )
    probe_timeout_s: float = Field(
        default=2.0, gt=0, description="Timeout of each check of Triton, broker, destination."
    )
    page_size: int = Field(default=50, ge=1, le=1000)
