"""The configured source archive as a query and a retriever (C-FIND with C-MOVE or C-GET,
or QIDO-RS with WADO-RS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine

from gateway.pull.config import DicomSource, DicomWebSource, Retrieval
from gateway.pull.errors import PullingOff
from gateway.pull.find import DimseQuery, SourceQuery
from gateway.pull.get import CGetRetriever
from gateway.pull.matches import InstanceMatch
from gateway.pull.move import CMoveRetriever
from gateway.pull.qido import QidoQuery
from gateway.pull.retrieved import Retrieved
from gateway.pull.wado import WadoRetriever
from gateway.settings import GatewaySettings


class Retriever(Protocol):
    def retrieve(self, study_instance_uid: str, listed: Sequence[InstanceMatch]) -> Retrieved: ...


@dataclass(frozen=True)
class SourceClient:
    source: DicomSource | DicomWebSource
    query: SourceQuery
    retriever: Retriever

    @property
    def transport(self) -> str:
        return self.source.transport

    @property
    def sender_label(self) -> str:
        """The calling AE the instances are recorded with (what a rule's calling_ae sees)."""
        if isinstance(self.source, DicomSource):
            return self.source.ae_title
        return self.source.sender_label


def source_client(settings: GatewaySettings, engine: Engine) -> SourceClient:
    """Raises PullingOff when no source archive is configured."""
    source = settings.pull.source
    if source is None:
        raise PullingOff("expected a source archive in the settings (pull.source), found none")
    pull = settings.pull
    if isinstance(source, DicomWebSource):
        return SourceClient(
            source,
            QidoQuery(source, pull, limit=pull.max_studies + 1),
            WadoRetriever(source, settings, engine),
        )
    ours = settings.dicom.ae_title
    retriever: Retriever
    if source.retrieve is Retrieval.GET:
        retriever = CGetRetriever(source, settings, engine)
    else:
        retriever = CMoveRetriever(source, pull, ours, source.move_destination or ours)
    return SourceClient(source, DimseQuery(source, pull, ours), retriever)
