"""Users of the admin UI: roles, creation, changes (which end the user's web sessions), and
sign-in under the limits of `login_limit.py`."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.models import User
from gateway.web.config import WebSettings
from gateway.web.login_limit import locked_by, record_failure
from gateway.web.passwords import dummy_verify, hash_password, verify_password
from gateway.web.sessions import EndReason, end_user_sessions

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class UserError(ValueError):
    """A user change was refused; the message says why (shown to the admin)."""


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    role: Role
    enabled: bool
    created_at: datetime
    last_login_at: datetime | None


def _account(row: object) -> Account:
    return Account(
        id=row.id,  # type: ignore[attr-defined]
        username=row.username,  # type: ignore[attr-defined]
        role=Role(row.role),  # type: ignore[attr-defined]
        enabled=bool(row.enabled),  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        last_login_at=row.last_login_at,  # type: ignore[attr-defined]
    )


_COLUMNS = (User.id, User.username, User.role, User.enabled, User.created_at, User.last_login_at)


def check_password_rules(password: str, web: WebSettings) -> None:
    if len(password) < web.min_password_length:
        raise UserError(
            f"expected a password of at least {web.min_password_length} characters, "
            f"found {len(password)}"
        )


def get_account(engine: Engine, user_id: int) -> Account | None:
    with engine.connect() as connection:
        row = connection.execute(select(*_COLUMNS).where(User.id == user_id)).one_or_none()
    return None if row is None else _account(row)


def list_accounts(engine: Engine) -> list[Account]:
    with engine.connect() as connection:
        rows = connection.execute(select(*_COLUMNS).order_by(User.username)).all()
    return [_account(r) for r in rows]


def create_user(
    engine: Engine,
    web: WebSettings,
    username: str,
    password: str,
    role: Role,
    *,
    actor: str,
    source_address: str | None = None,
) -> int:
    if not USERNAME.match(username):
        raise UserError(
            "expected a username of 1-64 letters, digits or . _ @ -, found another value"
        )
    check_password_rules(password, web)
    password_hash = hash_password(password)
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        exists = connection.execute(
            select(User.id).where(func.lower(User.username) == username.lower())
        ).first()
        if exists is not None:
            raise UserError(f"expected a new username, found {username!r} taken")
        user_id = connection.execute(
            insert(User)
            .values(
                username=username,
                password_hash=password_hash,
                role=role.value,
                enabled=True,
                created_at=now,
            )
            .returning(User.id)
        ).scalar_one()
        record(
            connection,
            audit_row(
                AuditKind.USER_CREATED,
                actor=actor,
                source_address=source_address,
                detail={"user": username, "role": role.value},
                occurred_at=now,
            ),
        )
    return int(user_id)


def _end_reason(changes: dict[str, object]) -> str | None:
    if "password" in changes:
        return EndReason.PASSWORD
    if "role" in changes:
        return EndReason.ROLE
    if changes.get("enabled") is False:
        return EndReason.DISABLED
    return None


def update_user(
    engine: Engine,
    web: WebSettings,
    user_id: int,
    *,
    actor: str,
    role: Role | None = None,
    enabled: bool | None = None,
    password: str | None = None,
    source_address: str | None = None,
) -> None:
    """Change a user's role, enabled flag or password. The last enabled admin cannot be
    demoted or disabled (nobody could administer the gateway then)."""
    values: dict[str, object] = {}
    if password:
        check_password_rules(password, web)
        values["password_hash"] = hash_password(password)
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(User.username, User.role, User.enabled).where(User.id == user_id)
        ).one_or_none()
        if row is None:
            raise UserError(f"expected user {user_id} to exist, found none")
        changes: dict[str, object] = {}
        if role is not None and role.value != row.role:
            values["role"] = changes["role"] = role.value
        if enabled is not None and enabled != bool(row.enabled):
            values["enabled"] = changes["enabled"] = enabled
        if password:
            changes["password"] = "changed"
        losing_admin = (
            row.role == Role.ADMIN.value
            and bool(row.enabled)
            and (
                values.get("role", Role.ADMIN.value) != Role.ADMIN.value
                or values.get("enabled", True) is False
            )
        )
        if losing_admin:
            admins = connection.execute(
                select(func.count())
                .select_from(User)
                .where(User.role == Role.ADMIN.value, User.enabled.is_(True))
            ).scalar_one()
            if admins <= 1:
                raise UserError("expected another enabled admin to remain, found none")
        if not changes:
            return
        connection.execute(update(User).where(User.id == user_id).values(**values))
        # A new password, role or a disable must not leave a copied cookie working.
        reason = _end_reason(changes)
        ended = 0 if reason is None else end_user_sessions(connection, user_id, reason, now)
        record(
            connection,
            audit_row(
                AuditKind.USER_UPDATED,
                actor=actor,
                source_address=source_address,
                detail={"user": row.username, **changes, "sessions_ended": ended},
                occurred_at=now,
            ),
        )


class LoginResult(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad credentials"
    BLOCKED = "too many failures"


def authenticate(
    engine: Engine,
    web: WebSettings,
    username: str,
    password: str,
    address: str,
    browser: str | None = None,
) -> tuple[LoginResult, Account | None]:
    """Check a sign-in. `browser` is the id of a trusted browser for this username (see
    `trusted_browser.py`). While a login limit holds, the password is not checked: the answer
    is BLOCKED whatever it is."""
    now = utcnow()
    username = username.strip()[:64]
    with engine.connect() as connection:
        limit = locked_by(connection, web, username, address, browser, now)
    if limit is not None:
        with writer_queue(engine), engine.begin() as connection:
            record(
                connection,
                audit_row(
                    AuditKind.USER_LOGIN_BLOCKED,
                    Outcome.FAILURE,
                    actor=username,
                    source_address=address,
                    detail={"limit": limit.value, "window_s": web.login_window_s},
                    occurred_at=now,
                ),
            )
        return LoginResult.BLOCKED, None
    with engine.connect() as connection:
        row = connection.execute(
            select(*_COLUMNS, User.password_hash).where(User.username == username)
        ).one_or_none()
    if row is None:
        dummy_verify(password)
        ok = False
    else:
        ok = verify_password(password, row.password_hash) and bool(row.enabled)
    with writer_queue(engine), engine.begin() as connection:
        if not ok:
            record(
                connection,
                audit_row(
                    AuditKind.USER_LOGIN_FAILED,
                    Outcome.FAILURE,
                    actor=username,
                    source_address=address,
                    detail={
                        "reason": "unknown user, wrong password or disabled",
                        "trusted_browser": browser is not None,
                    },
                    occurred_at=now,
                ),
            )
            reached = record_failure(connection, web, username, address, browser, now)
            if reached is not None:
                record(
                    connection,
                    audit_row(
                        AuditKind.USER_LOGIN_LOCKED,
                        Outcome.FAILURE,
                        actor=username,
                        source_address=address,
                        detail={"limit": reached.value, "window_s": web.login_window_s},
                        occurred_at=now,
                    ),
                )
            return LoginResult.BAD_CREDENTIALS, None
        assert row is not None
        connection.execute(update(User).where(User.id == row.id).values(last_login_at=now))
        record(
            connection,
            audit_row(
                AuditKind.USER_LOGIN, actor=username, source_address=address, occurred_at=now
            ),
        )
    return LoginResult.OK, _account(row)
