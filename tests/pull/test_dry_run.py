"""A dry run lists the studies the query finds and the rule that would take each (the
router's rule evaluation on the source's answers), and fetches nothing: Orthanc served no
retrieval, the gateway stored no instance and recorded no run."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from gateway.models import PullRun
from gateway.pull.criteria import PullCriteria
from gateway.pull.retrospective import dry_run
from gateway.routing.seed import seed_rules
from gateway.settings import GatewaySettings
from tests.pull.conftest import (
    SourcePacs,
    audit_rows,
    pull_settings,
    pulled_rows,
    source_config,
    stored_instances,
)
from tests.pull.studies import SourceStudy

RULES = {
    "rules": [
        {
            "name": "chest-ct",
            "conditions": [
                {"attribute": "modality", "value": "CT"},
                {"attribute": "body_part_examined", "value": "CHEST"},
            ],
        },
        {"name": "off", "enabled": False},  # would take everything, but disabled
    ]
}


@pytest.mark.parametrize("transport", ["c-move", "wado-rs"])
def test_dry_run_lists_studies_and_rules_without_fetching(
    transport: str,
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
) -> None:
    configured = pull_settings(settings, source_config(source_pacs, transport), routing=RULES)
    with engine.begin() as connection:
        seed_rules(connection, configured.routing.rules)
    before = source_pacs.retrievals()
    requests_before = len(source_pacs.http_requests())

    plan = dry_run(
        configured, engine, PullCriteria(date_from="20250601", date_to="20250603"), actor="t"
    )

    by_uid = {p.study.study_instance_uid: p for p in plan}
    b, c, d = (source_studies[k] for k in "bcd")
    assert set(by_uid) == {b.study_instance_uid, c.study_instance_uid, d.study_instance_uid}
    assert by_uid[b.study_instance_uid].rule == "chest-ct"
    assert by_uid[c.study_instance_uid].rule == "chest-ct"
    assert by_uid[c.study_instance_uid].study.instance_count == 4
    mr = by_uid[d.study_instance_uid]
    assert mr.rule is None and mr.study.modalities == ("MR",)
    assert "series 1 modality 'MR' equals 'CT': no" in str(mr.reason), mr.reason
    assert "off" not in str(mr.reason)  # disabled rules are not tried

    # Nothing fetched: no retrieval served, nothing stored, no run, no pulled mark.
    assert source_pacs.retrievals() == before
    assert stored_instances(engine) == set()
    assert pulled_rows(engine) == []
    with engine.connect() as connection:
        assert connection.execute(select(PullRun.id)).first() is None
    if transport == "wado-rs":  # only searches reached the DICOMweb server
        new = source_pacs.http_requests()[requests_before:]
        assert new and all("/dicom-web/studies" in u and "/instances/" not in u for _, u in new)
        assert all(u.split("?")[0].endswith(("/studies", "/series")) for _, u in new), new
    (event,) = audit_rows(engine, "pull.dry_run")
    assert event.detail["studies"] == 3 and event.detail["routed"] == 2
