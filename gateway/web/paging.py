"""The `page` query parameter of the list views, clamped: anything that is not a whole
number means page 1, and a number past the last page (however large) means the last page,
so no value reaches the database as an offset it cannot hold."""

from __future__ import annotations

from collections.abc import Mapping

MAX_DIGITS = 12  # more digits are past any last page; int() of them is never attempted


def page_count(total: int, size: int) -> int:
    return max(1, -(-total // size))


def clamp_page(raw: str | None, total: int, size: int) -> int:
    pages = page_count(total, size)
    text = (raw or "").strip()
    if not text.isascii() or not text.isdigit():
        return 1
    if len(text) > MAX_DIGITS:
        return pages
    return min(max(1, int(text)), pages)


def page_from(args: Mapping[str, str], total: int, size: int) -> int:
    return clamp_page(args.get("page"), total, size)
