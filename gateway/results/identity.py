"""Who made a result and under which UIDs: equipment, algorithms, and derived UIDs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import highdicom as hd

from gateway import __version__
from gateway.pipelines.findings import ModelIdentity, PipelineFindings
from gateway.results import codes
from gateway.results.config import ResultsSettings
from gateway.results.declared import ConvertibleFindings, DeclaredFindings, declared
from gateway.results.uids import derive_uid


@dataclass(frozen=True)
class ResultUIDs:
    """UIDs of one result set, derived from what identifies it (see `for_findings`)."""

    key: tuple[str, ...]

    @classmethod
    def for_findings(
        cls, findings: PipelineFindings | ConvertibleFindings, pipeline: str = "default"
    ) -> ResultUIDs:
        """Same source series, pipeline (the job's: name and generation) and model versions:
        same UIDs, so a rerun of a job replaces its objects at the PACS instead of adding a
        second copy."""
        generic = (
            findings if isinstance(findings, PipelineFindings) else declared(findings).findings
        )
        return cls((generic.series_instance_uid, pipeline, *(m.identity for m in generic.models)))

    def uid(self, *what: str) -> str:
        return derive_uid(*self.key, *what)

    @property
    def seg_series(self) -> str:
        return self.uid("seg", "series")

    @property
    def seg_instance(self) -> str:
        return self.uid("seg", "instance")

    @property
    def sr_series(self) -> str:
        return self.uid("sr", "series")

    @property
    def sr_instance(self) -> str:
        return self.uid("sr", "instance")

    @property
    def gsps_series(self) -> str:
        return self.uid("gsps", "series")

    @property
    def gsps_instance(self) -> str:
        return self.uid("gsps", "instance")

    @property
    def sc_series(self) -> str:
        return self.uid("sc", "series")

    def sc_instance(self, structure: str) -> str:
        """The key image of one finding ('nodule-1')."""
        return self.uid("sc", "instance", structure)

    @property
    def ko_series(self) -> str:
        return self.uid("ko", "series")

    @property
    def ko_instance(self) -> str:
        return self.uid("ko", "instance")

    def tracking(self, structure: str) -> str:
        """Tracking UID of a structure ('lung', 'nodule-1', or an image-level finding's
        name), shared by the SEG segment and the SR measurement group."""
        return self.uid("tracking", structure)

    @property
    def device_observer(self) -> str:
        return derive_uid("device", *self.key[1:])


def device_observer_context(uids: ResultUIDs, settings: ResultsSettings) -> hd.sr.ObserverContext:
    """This gateway as the observer (TID 1004) of an SR or key object selection."""
    return hd.sr.ObserverContext(
        observer_type=codes.codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uids.device_observer,
            name=settings.manufacturer_model_name,
            manufacturer_name=settings.manufacturer,
            model_name=settings.manufacturer_model_name,
            serial_number=settings.device_serial_number,
        ),
    )


def algorithm_identification(model: ModelIdentity) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=model.name, family=codes.ARTIFICIAL_INTELLIGENCE, version=model.version or "latest"
    )


def sr_algorithm(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=model.name, version=model.version or "latest")


def software_versions(findings: PipelineFindings) -> tuple[str, ...]:
    return (
        f"pacs-gateway {__version__}",
        *(f"{m.name} {m.version or 'latest'}" for m in findings.models),
    )


def model_of(item: DeclaredFindings, key: str) -> ModelIdentity:
    """The identity of the description's model `key` (models are in description order)."""
    keys = [m.key for m in item.description.models]
    return item.findings.models[keys.index(key)]


def contributing_equipment(
    settings: ResultsSettings, item: DeclaredFindings
) -> list[hd.ContributingEquipment]:
    return [
        hd.ContributingEquipment(
            manufacturer=settings.manufacturer,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=settings.manufacturer_model_name,
            software_versions=list(software_versions(item.findings)),
            device_serial_number=settings.device_serial_number,
            institution_name=settings.institution_name,
            contribution_datetime=datetime.now(UTC).replace(microsecond=0, tzinfo=None),
            contribution_description=item.description.report.contribution_description,
        )
    ]
