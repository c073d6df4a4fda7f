"""Server-side web sessions: the cookie carries a random token, the `web_sessions` table its
SHA-256. Every request looks the token up, so ending a row (logout, password, role or enabled
change, an admin's "End") refuses a copied cookie at once, in every web process."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update

from gateway.audit import utcnow
from gateway.database import writer_queue
from gateway.models import User, WebSession

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often
KEEP_ENDED = timedelta(days=30)  # ended rows stay this long for the admin's view
USER_AGENT_LENGTH = 200


class EndReason:
    LOGOUT = "logout"
    IDLE = "idle"
    PASSWORD = "password changed"
    ROLE = "role changed"
    DISABLED = "user disabled"
    ADMIN = "ended by admin"


@dataclass(frozen=True)
class ActiveSession:
    id: int
    user_id: int
    username: str
    created_at: datetime
    last_seen_at: datetime
    source_address: str | None
    user_agent: str | None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite gives naive UTC


def start_session(engine: Engine, user_id: int, address: str, user_agent: str) -> str:
    """A new session row; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        connection.execute(
            delete(WebSession).where(
                or_(
                    WebSession.ended_at < now - KEEP_ENDED,
                    WebSession.last_seen_at < now - KEEP_ENDED,
                )
            )
        )
        connection.execute(
            insert(WebSession).values(
                token_sha256=token_digest(token),
                user_id=user_id,
                created_at=now,
                last_seen_at=now,
                source_address=address[:64],
                user_agent=user_agent[:USER_AGENT_LENGTH] or None,
            )
        )
    return token


def resolve_session(engine: Engine, token: str, lifetime_s: int) -> tuple[int, int] | None:
    """(session id, user id) of a live session with this token: not ended, seen within
    `lifetime_s`, its user enabled. An idle one is ended here."""
    now = utcnow()
    with engine.connect() as connection:
        row = connection.execute(
            select(WebSession.id, WebSession.user_id, WebSession.last_seen_at)
            .join(User, User.id == WebSession.user_id)
            .where(
                WebSession.token_sha256 == token_digest(token),
                WebSession.ended_at.is_(None),
                User.enabled.is_(True),
            )
        ).one_or_none()
    if row is None:
        return None
    last_seen = _aware(row.last_seen_at)
    if now - last_seen > timedelta(seconds=lifetime_s):
        with writer_queue(engine), engine.begin() as connection:
            _end(connection, WebSession.id == row.id, EndReason.IDLE, now)
        return None
    if now - last_seen > TOUCH_EVERY:
        with writer_queue(engine), engine.begin() as connection:
            connection.execute(
                update(WebSession).where(WebSession.id == row.id).values(last_seen_at=now)
            )
    return int(row.id), int(row.user_id)


def _end(connection: Connection, which: object, reason: str, now: datetime) -> int:
    result = connection.execute(
        update(WebSession)
        .where(and_(which, WebSession.ended_at.is_(None)))  # type: ignore[arg-type]
        .values(ended_at=now, end_reason=reason)
    )
    return int(result.rowcount or 0)


def end_user_sessions(
    connection: Connection, user_id: int, reason: str, now: datetime | None = None
) -> int:
    """End every live session of a user, in the caller's transaction; returns how many."""
    return _end(connection, WebSession.user_id == user_id, reason, now or utcnow())


def end_session(connection: Connection, session_id: int, reason: str) -> tuple[int, str] | None:
    """End one live session; (user id, username) it belonged to, or None if it was not live."""
    row = connection.execute(
        select(WebSession.user_id, User.username)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.id == session_id, WebSession.ended_at.is_(None))
    ).one_or_none()
    if row is None or _end(connection, WebSession.id == session_id, reason, utcnow()) == 0:
        return None
    return int(row.user_id), str(row.username)


def list_active_sessions(engine: Engine, lifetime_s: int) -> list[ActiveSession]:
    since = utcnow() - timedelta(seconds=lifetime_s)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                WebSession.id,
                WebSession.user_id,
                User.username,
                WebSession.created_at,
                WebSession.last_seen_at,
                WebSession.source_address,
                WebSession.user_agent,
            )
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.ended_at.is_(None), WebSession.last_seen_at >= since)
            .order_by(User.username, WebSession.created_at.desc())
        ).all()
    return [
        ActiveSession(
            id=r.id,
            user_id=r.user_id,
            username=r.username,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            source_address=r.source_address,
            user_agent=r.user_agent,
        )
        for r in rows
    ]
