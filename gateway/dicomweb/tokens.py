"""Per-client API tokens of the DICOMweb server: made by an admin and shown once, kept only
as SHA-256 (a 256-bit random secret needs no slow hash), scoped, revocable, with the time
and address of last use. A client presents its token as a bearer token, or as the password
of HTTP basic with its client name as the user."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert, select, update

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.models import ApiToken

TOKEN_PREFIX = "pgw_"
# The client name is also the calling AE title of what the client stores (routing rules can
# match it): AE title characters, no spaces.
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,16}$")


class Scope(enum.StrEnum):
    STORE = "store"  # STOW-RS
    READ = "read"  # QIDO-RS and WADO-RS
    BOTH = "both"

    def allows(self, needed: Scope) -> bool:
        return self is Scope.BOTH or self is needed


class TokenError(Exception):
    """A token could not be made or revoked; the message says why (no secret in it)."""


@dataclass(frozen=True)
class ApiClient:
    """The client a request authenticated as."""

    token_id: int
    client_name: str
    scope: Scope
    last_used_at: datetime | None


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def check_client_name(value: str) -> str:
    name = value.strip()
    if not _CLIENT_NAME.match(name):
        raise TokenError(
            "expected a client name of 1-16 letters, digits, '.', '_' or '-', "
            f"found {len(name)} characters that are not"
        )
    return name


def parse_scope(value: str) -> Scope:
    try:
        return Scope(value)
    except ValueError:
        raise TokenError(
            f"expected a scope in {[s.value for s in Scope]}, found {value[:20]!r}"
        ) from None


def create_token(
    engine: Engine, client_name: str, scope: Scope, *, actor: str, source_address: str | None
) -> str:
    """Make a token and return its secret: the only time anyone sees it."""
    name = check_client_name(client_name)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        taken = connection.execute(select(ApiToken.id).where(ApiToken.client_name == name)).scalar()
        if taken is not None:
            raise TokenError(
                f"expected a new client name, found {name!r} taken (names are never reused, "
                "so the audit log stays unambiguous)"
            )
        connection.execute(
            insert(ApiToken).values(
                client_name=name,
                token_sha256=token_digest(secret),
                scope=scope.value,
                created_at=now,
                created_by=actor,
            )
        )
        record(
            connection,
            audit_row(
                AuditKind.API_TOKEN_CREATED,
                actor=actor,
                source_address=source_address,
                detail={"client": name, "scope": scope.value},
                occurred_at=now,
            ),
        )
    return secret


def revoke_token(engine: Engine, token_id: int, *, actor: str, source_address: str | None) -> str:
    """Revoke a live token; returns its client name."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        name = connection.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now, revoked_by=actor)
            .returning(ApiToken.client_name)
        ).scalar()
        if name is None:
            raise TokenError(f"expected a live token {token_id}, found none")
        record(
            connection,
            audit_row(
                AuditKind.API_TOKEN_REVOKED,
                actor=actor,
                source_address=source_address,
                detail={"client": name},
                occurred_at=now,
            ),
        )
    return str(name)


def list_tokens(engine: Engine) -> list[ApiToken]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.client_name)
        )
        return [ApiToken(**row._mapping) for row in rows]


def _client(row: ApiToken) -> ApiClient:
    return ApiClient(row.id, row.client_name, Scope(row.scope), row.last_used_at)


def authenticate_token(engine: Engine, secret: str) -> ApiClient | None:
    """The live token whose secret this is, or None."""
    with engine.connect() as connection:
        row = connection.execute(
            select(ApiToken).where(
                ApiToken.token_sha256 == token_digest(secret), ApiToken.revoked_at.is_(None)
            )
        ).first()
    return None if row is None else _client(ApiToken(**row._mapping))


def authenticate_basic(engine: Engine, client_name: str, secret: str) -> ApiClient | None:
    """HTTP basic: the client's name and its token's secret."""
    with engine.connect() as connection:
        row = connection.execute(
            select(ApiToken).where(
                ApiToken.client_name == client_name, ApiToken.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        token_digest(secret)  # as much work as a match, so timing tells no names
        return None
    token = ApiToken(**row._mapping)
    if not hmac.compare_digest(token.token_sha256, token_digest(secret)):
        return None
    return _client(token)


def touch(engine: Engine, client: ApiClient, address: str | None, interval_s: int) -> None:
    """Record the last use, at most once per `interval_s` (a busy client costs no write per
    request)."""
    now = utcnow()
    last = client.last_used_at
    if last is not None:
        if last.tzinfo is None:
            last = last.replace(tzinfo=now.tzinfo)
        if now - last < timedelta(seconds=interval_s):
            return
    with writer_queue(engine), engine.begin() as connection:
        connection.execute(
            update(ApiToken)
            .where(ApiToken.id == client.token_id)
            .values(last_used_at=now, last_used_address=address)
        )
