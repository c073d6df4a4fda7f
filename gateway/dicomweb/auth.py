"""Who a DICOMweb request comes from: a bearer token, or HTTP basic with a token's client
name and secret. No session, no cookie, no CSRF (nothing here is a browser form): a request
without a live token is answered 401 with the challenges it may answer, one whose token lacks
the scope 403."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Request
from sqlalchemy import Engine

from gateway.dicomweb.tokens import ApiClient, Scope, authenticate_basic, authenticate_token

REALM = "pacs-gateway DICOMweb"


class Unauthenticated(Exception):
    """No credentials, or none that name a live token (401)."""


class Forbidden(Exception):
    """The token is live but lacks the scope of the route (403)."""


@dataclass(frozen=True)
class Challenge:
    basic: bool

    def headers(self) -> list[tuple[str, str]]:
        values = [("WWW-Authenticate", f'Bearer realm="{REALM}"')]
        if self.basic:
            values.append(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'))
        return values


def needed_scope(method: str) -> Scope:
    return Scope.STORE if method == "POST" else Scope.READ


def authenticate(request: Request, engine: Engine, *, allow_basic: bool) -> ApiClient:
    credentials = request.authorization
    client = None
    if credentials is not None and credentials.type == "bearer" and credentials.token:
        client = authenticate_token(engine, credentials.token)
    elif credentials is not None and credentials.type == "basic" and allow_basic:
        client = authenticate_basic(engine, credentials.username or "", credentials.password or "")
    if client is None:
        found = "none" if credentials is None else f"{credentials.type} credentials not valid"
        raise Unauthenticated(f"expected an API token (bearer or basic), found {found}")
    needed = needed_scope(request.method)
    if not client.scope.allows(needed):
        raise Forbidden(
            f"expected a token with the {needed.value} scope, found {client.scope.value} "
            f"for client {client.client_name}"
        )
    return client
