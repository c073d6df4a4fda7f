"""Fetch one study: list its instances on the source, retrieve what the gateway lacks,
then check that every instance the source listed is stored. Transient failures are retried
with back-off (each retry audited); the study counts as fetched only when nothing is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select

from gateway.models import Instance
from gateway.pull.errors import SourceError
from gateway.pull.events import retry_auditor
from gateway.pull.matches import InstanceMatch
from gateway.pull.retry import with_retries
from gateway.pull.source import SourceClient
from gateway.settings import GatewaySettings

_IN_CHUNK = 500


@dataclass(frozen=True)
class Fetched:
    study_instance_uid: str
    listed: int
    retrieved: bool  # False: every listed instance was already stored
    attempts: int


def missing_instances(engine: Engine, listed: Sequence[InstanceMatch]) -> list[str]:
    """SOP Instance UIDs of `listed` that no instance row holds."""
    wanted = [i.sop_instance_uid for i in listed]
    present: set[str] = set()
    with engine.connect() as connection:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            present.update(
                connection.execute(
                    select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(chunk))
                ).scalars()
            )
    return [uid for uid in wanted if uid not in present]


class StudyFetcher:
    def __init__(
        self,
        settings: GatewaySettings,
        engine: Engine,
        client: SourceClient,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        self.stop = stop

    def _attempt(self, study_instance_uid: str) -> Fetched:
        listed = self.client.query.instances(study_instance_uid)
        if not listed:
            raise SourceError(
                f"the source lists no instances of study {study_instance_uid}", permanent=True
            )
        if not missing_instances(self.engine, listed):
            return Fetched(study_instance_uid, len(listed), False, 0)
        report = self.client.retriever.retrieve(study_instance_uid, listed)
        missing = missing_instances(self.engine, listed)
        if missing:
            raise SourceError(
                f"{len(missing)} of {len(listed)} instances of study {study_instance_uid} "
                f"not stored after the {self.client.transport} ({report.describe()})"
            )
        return Fetched(study_instance_uid, len(listed), True, 0)

    def fetch(self, study_instance_uid: str) -> Fetched:
        """Raises GaveUp (a SourceError) with the last reason after the last attempt."""
        fetched, attempts = with_retries(
            lambda: self._attempt(study_instance_uid),
            self.settings.pull,
            stop=self.stop,
            on_retry=retry_auditor(
                self.engine,
                self.settings.pull.max_attempts,
                self.client.transport,
                step="fetch",
                study_instance_uid=study_instance_uid,
            ),
        )
        return Fetched(fetched.study_instance_uid, fetched.listed, fetched.retrieved, attempts)
