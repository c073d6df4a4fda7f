"""The Accept header of a WADO-RS request: which media types and transfer syntaxes the client
takes (PS3.18 8.7)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dicomweb.multipart import MediaType, split_unquoted

ANY_SYNTAX = "*"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


class NotAcceptable(Exception):
    """Nothing the client accepts can be sent (406); the message says what could be."""


@dataclass(frozen=True)
class Acceptable:
    """One accepted part type and transfer syntax (None: not named, ANY_SYNTAX: '*')."""

    part_type: str
    transfer_syntax: str | None


def accepted(header: str | None) -> list[MediaType]:
    if not header:
        return []
    entries = []
    for item in split_unquoted(header, ","):
        if not item:
            continue
        entry = MediaType.parse(item)
        if entry.parameters.get("q") not in ("0", "0.0", "0.00", "0.000"):
            entries.append(entry)
    return entries


def multipart_choices(header: str | None, part_types: tuple[str, ...]) -> list[Acceptable]:
    """What a multipart/related answer may carry, in the client's order. No Accept header,
    */* or multipart/related without a type: the first of `part_types`, as stored."""
    entries = accepted(header)
    if not entries:
        return [Acceptable(part_types[0], None)]
    choices = []
    for entry in entries:
        if entry.type in ("*/*", "multipart/*"):
            choices.append(Acceptable(part_types[0], None))
        elif entry.type == "multipart/related":
            part_type = entry.parameters.get("type", part_types[0]).lower()
            if part_type in part_types or part_type in ("*/*", "*"):
                chosen = part_types[0] if part_type in ("*/*", "*") else part_type
                choices.append(Acceptable(chosen, entry.parameters.get("transfer-syntax")))
        elif entry.type in part_types:  # a single-part type: answered as one multipart part
            choices.append(Acceptable(entry.type, entry.parameters.get("transfer-syntax")))
    if not choices:
        raise NotAcceptable(
            f"expected an Accept of multipart/related with type {' or '.join(part_types)}, "
            f"found {(header or '')[:200]!r}"
        )
    return choices


def takes_syntax(choices: list[Acceptable], stored: str) -> bool:
    """The stored bytes may go as they are: '*', no syntax named, or the stored one."""
    return any(c.transfer_syntax in (None, ANY_SYNTAX, stored) for c in choices)


def wants_syntax(choices: list[Acceptable], syntax: str) -> bool:
    return any(c.transfer_syntax == syntax for c in choices)
