"""What went wrong talking to the source archive, and whether trying again could help."""

from __future__ import annotations


class SourceError(Exception):
    """A query or retrieval failed. `permanent`: retrying cannot help (the PACS refused our
    AE, does not know the move destination, has no such study); otherwise it may (refused
    connection, timeout, out of resources). The message names UIDs and counts only."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class PullingOff(Exception):
    """No source archive is configured (`pull.source`)."""
