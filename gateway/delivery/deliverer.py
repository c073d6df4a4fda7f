"""Send what is due: claim pending deliveries, send them in batches per destination, record
each object's outcome. Files were written before their rows, so nothing is sent that could
be lost; an outcome is recorded only after the destination answered."""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from datetime import timedelta

from sqlalchemy import Engine

from gateway.database import writer_queue
from gateway.delivery.config import DicomDestination
from gateway.delivery.cstore import CStoreSender
from gateway.delivery.ledger import ClaimedDelivery, claim_due, record_outcome
from gateway.delivery.outcome import OutgoingObject, SendOutcome, all_failed
from gateway.delivery.registry import destination_by_name, destination_names
from gateway.delivery.stow import StowSender
from gateway.models import DeliveryState
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)


class UnusableDestination(Exception):
    """The destination cannot be sent to; `permanent` says whether retrying could help."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Deliverer:
    """Sends to the destinations of the `destinations` table (seeded from the settings by
    whoever starts the gateway: serve(), the web app, publish_results)."""

    def __init__(self, settings: GatewaySettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._writers = writer_queue(engine)

    def _sender(self, name: str) -> CStoreSender | StowSender:
        """The sender for a destination as the database has it now."""
        with self.engine.connect() as connection:
            stored = destination_by_name(connection, name)
            if stored is None:
                known = destination_names(connection, include_disabled=True)
        if stored is None:
            raise UnusableDestination(
                f"expected a destination named {name!r}, found {known}", permanent=True
            )
        if not stored.enabled:
            raise UnusableDestination(
                f"destination {name!r} is disabled (enable it in the admin UI and retry the job)",
                permanent=True,
            )
        destination = stored.destination
        if destination is None:  # e.g. a CA file gone: may be fixed, so retried
            raise UnusableDestination(stored.problem or name, permanent=False)
        if isinstance(destination, DicomDestination):
            return CStoreSender(destination, self.settings.dicom.ae_title, self.settings.delivery)
        return StowSender(destination, self.settings.delivery)

    @property
    def lease(self) -> timedelta:
        d = self.settings.delivery
        # Long enough for a whole batch to be answered, even slowly.
        return timedelta(seconds=d.connect_timeout_s + d.response_timeout_s * (d.batch_size + 1))

    def deliver_due(self, study_instance_uid: str | None = None) -> Counter[DeliveryState]:
        """One pass: every due delivery (of one study, if given) is attempted once.
        Returns how many ended in each state."""
        with self._writers, self.engine.begin() as connection:
            claimed = claim_due(
                connection,
                self.lease,
                limit=self.settings.delivery.batch_size
                * max(1, len(destination_names(connection, include_disabled=True))),
                study_instance_uid=study_instance_uid,
            )
        by_destination: dict[str, list[ClaimedDelivery]] = defaultdict(list)
        for item in claimed:
            by_destination[item.destination].append(item)
        states: Counter[DeliveryState] = Counter()
        for name, items in by_destination.items():
            batch_size = self.settings.delivery.batch_size
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                outcomes = self._send(name, batch)
                with self._writers, self.engine.begin() as connection:
                    for item, outcome in zip(batch, outcomes, strict=True):
                        states[
                            record_outcome(connection, item, outcome, self.settings.delivery)
                        ] += 1
                failed = [o for o in outcomes if not o.delivered]
                LOGGER.info(
                    "delivery to %s: %d sent, %d not delivered%s",
                    name,
                    len(batch) - len(failed),
                    len(failed),
                    f" ({failed[0].reason})" if failed else "",
                )
        return states

    def run(self, stop: threading.Event) -> None:
        """Retry what is due until `stop` is set (the pipeline sends new results itself)."""
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception as exc:  # keep polling: the database may come back
                LOGGER.error("delivery pass failed: %s", type(exc).__name__)
            stop.wait(self.settings.delivery.poll_interval_s)

    def _send(self, name: str, batch: list[ClaimedDelivery]) -> list[SendOutcome]:
        objects = [
            OutgoingObject(
                item.sop_instance_uid,
                item.sop_class_uid,
                self.settings.results_dir / item.file_path,
            )
            for item in batch
        ]
        try:
            sender = self._sender(name)
        except UnusableDestination as exc:  # removed, disabled or broken since it was queued
            return all_failed(objects, exc.reason, permanent=exc.permanent)
        try:
            return sender.send(objects)
        except Exception as exc:  # a bug or an unexpected library error: retry, never lose
            LOGGER.exception("delivery to %s raised", name)
            return all_failed(
                objects, f"sender raised {type(exc).__name__}: {exc}", permanent=False
            )
