"""Who made a result and under which UIDs: equipment, algorithms, and derived UIDs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import highdicom as hd

from gateway import __version__
from gateway.results import codes
from gateway.results.config import ResultsSettings
from gateway.results.uids import derive_uid
from workers.inference.findings import Findings, ModelIdentity


@dataclass(frozen=True)
class ResultUIDs:
    """UIDs of one result set, derived from what identifies it (see `for_findings`)."""

    key: tuple[str, ...]

    @classmethod
    def for_findings(cls, findings: Findings, pipeline: str = "default") -> ResultUIDs:
        """Same source series, pipeline and model versions: same UIDs, so a rerun of a job
        replaces its objects at the PACS instead of adding a second copy."""
        return cls(
            (
                findings.series_instance_uid,
                pipeline,
                f"{findings.segmentation_model.name}:{findings.segmentation_model.version}",
                f"{findings.classification_model.name}:{findings.classification_model.version}",
            )
        )

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

    def tracking(self, structure: str) -> str:
        """Tracking UID of a structure ('lung', 'nodule-1', 'classification'), shared by the
        SEG segment and the SR measurement group."""
        return self.uid("tracking", structure)

    @property
    def device_observer(self) -> str:
        return derive_uid("device", *self.key[1:])


def algorithm_identification(model: ModelIdentity) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=model.name, family=codes.ARTIFICIAL_INTELLIGENCE, version=model.version or "latest"
    )


def sr_algorithm(model: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=model.name, version=model.version or "latest")


def software_versions(findings: Findings) -> tuple[str, ...]:
    return (
        f"pacs-gateway {__version__}",
        f"{findings.segmentation_model.name} {findings.segmentation_model.version or 'latest'}",
        f"{findings.classification_model.name} {findings.classification_model.version or 'latest'}",
    )


def contributing_equipment(
    settings: ResultsSettings, findings: Findings
) -> list[hd.ContributingEquipment]:
    return [
        hd.ContributingEquipment(
            manufacturer=settings.manufacturer,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=settings.manufacturer_model_name,
            software_versions=list(software_versions(findings)),
            device_serial_number=settings.device_serial_number,
            institution_name=settings.institution_name,
            contribution_datetime=datetime.now(UTC).replace(microsecond=0, tzinfo=None),
            contribution_description="AI lung nodule segmentation and classification",
        )
    ]
