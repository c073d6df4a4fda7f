"""Trusted browsers ("device cookies", OWASP): after a successful sign-in the browser gets a
signed cookie naming the user and a random browser id. Sign-ins that present it for that
user count failures per browser only, so a lock-out by someone else (at the same address or
spread over many) never shuts the user out of the browser they normally use. The cookie
grants nothing by itself: the password is still needed."""

from __future__ import annotations

import hashlib
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from gateway.web.config import WebSettings

COOKIE = "pacs_gateway_browser"
_SALT = "pacs-gateway-trusted-browser"


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=_SALT)


def trust_browser(response: Response, secret: str, web: WebSettings, username: str) -> None:
    if web.login_trusted_browser_s == 0:
        return
    value = _serializer(secret).dumps({"user": username, "browser": secrets.token_urlsafe(16)})
    response.set_cookie(
        COOKIE,
        value,
        max_age=web.login_trusted_browser_s,
        path="/login",
        secure=web.session_cookie_secure,
        httponly=True,
        samesite="Strict",
    )


def trusted_browser(cookie: str | None, secret: str, web: WebSettings, username: str) -> str | None:
    """The SHA-256 of the browser id when `cookie` is a valid trust for `username`, else None."""
    if not cookie or web.login_trusted_browser_s == 0:
        return None
    try:
        value = _serializer(secret).loads(cookie, max_age=web.login_trusted_browser_s)
    except BadSignature:  # also SignatureExpired
        return None
    if not isinstance(value, dict) or value.get("user") != username:
        return None
    browser = value.get("browser")
    if not isinstance(browser, str):
        return None
    return hashlib.sha256(browser.encode("utf-8")).hexdigest()
