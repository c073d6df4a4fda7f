"""The sign-in limits, counted in the `login_failures` table (shared by every web process).

A browser that signed in as a user before (a trusted browser, `trusted_browser.py`) has its
own count, so nobody else can lock it out. Every other attempt counts per username and
address, per address over all usernames (a spray over many names) and per username over all
addresses (a guess spread over many addresses). While a limit holds, the password is not
checked at all: the right one gets the same answer, as fast, as a wrong one.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, delete, func, insert, select

from gateway.models import LoginFailure
from gateway.web.config import WebSettings


class LoginLimit(enum.StrEnum):
    USER_ADDRESS = "username and address"
    ADDRESS = "address"
    USER = "username"
    BROWSER = "trusted browser"


def _count(connection: Connection, since: datetime, *where: ColumnElement[bool]) -> int:
    return int(
        connection.execute(
            select(func.count())
            .select_from(LoginFailure)
            .where(LoginFailure.occurred_at >= since, *where)
        ).scalar_one()
    )


def locked_by(
    connection: Connection,
    web: WebSettings,
    username: str,
    address: str,
    browser: str | None,
    now: datetime,
) -> LoginLimit | None:
    """The limit that refuses this attempt now, or None."""
    since = now - timedelta(seconds=web.login_window_s)
    if browser is not None:
        if _count(connection, since, LoginFailure.device == browser) >= web.login_max_failures:
            return LoginLimit.BROWSER
        return None
    untrusted = LoginFailure.device.is_(None)
    checks = (
        (
            LoginLimit.USER_ADDRESS,
            web.login_max_failures,
            (LoginFailure.username == username, LoginFailure.source_address == address),
        ),
        (
            LoginLimit.ADDRESS,
            web.login_max_failures_per_address,
            (LoginFailure.source_address == address,),
        ),
        (LoginLimit.USER, web.login_max_failures_per_user, (LoginFailure.username == username,)),
    )
    for limit, maximum, where in checks:
        if _count(connection, since, untrusted, *where) >= maximum:
            return limit
    return None


def record_failure(
    connection: Connection,
    web: WebSettings,
    username: str,
    address: str,
    browser: str | None,
    now: datetime,
) -> LoginLimit | None:
    """Count a failed sign-in (in the caller's transaction) and drop rows past the window;
    returns the limit this failure reached, if any (to audit the lock-out once)."""
    connection.execute(
        delete(LoginFailure).where(
            LoginFailure.occurred_at < now - timedelta(seconds=web.login_window_s)
        )
    )
    connection.execute(
        insert(LoginFailure).values(
            occurred_at=now, username=username, source_address=address, device=browser
        )
    )
    return locked_by(connection, web, username, address, browser, now)
