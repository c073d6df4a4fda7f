"""Rules evaluated against studies stored through the listener: order, disabled rules, the
default, study- and series-level conditions, and the reasons given when nothing matches."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from gateway.models import Study
from gateway.routing.config import Condition, RuleSettings
from gateway.routing.rules import StudyNotFound, evaluate_rule, route_study
from gateway.routing.seed import load_rules, seed_rules
from tests.conftest import RunningGateway
from tests.dicom_samples import SECRET_PATIENT_ID, SECRET_PATIENT_NAME
from tests.routing.studies import SeriesSpec, send_study

THIN_CHEST = RuleSettings(
    name="thin_chest_ct",
    conditions=[
        Condition(attribute="modality", value="ct"),
        Condition(attribute="body_part_examined", operator="in", value=["chest", "lung"]),
        Condition(attribute="slice_thickness", operator="less_or_equal", value=1.5),
    ],
)
ANY_CT = RuleSettings(name="any_ct", conditions=[Condition(attribute="modality", value="CT")])
DEFAULT = RuleSettings(name="default")


def chest_study(gateway: RunningGateway, tmp_path: Path, **kwargs: str) -> dict[int | str, str]:
    """UIDs by series number, and the study's under "study"."""
    sent = send_study(
        gateway,
        tmp_path / "in",
        [
            SeriesSpec(1, 3, thickness=5.0),
            SeriesSpec(2, 4, thickness=1.0),
            SeriesSpec(3, 2, body_part=None, thickness=1.0),
        ],
        **kwargs,
    )
    uids: dict[int | str, str] = {n: uid for n, uid in sent.series_uids.items() if n is not None}
    return {"study": sent.study_uid, **uids}


def test_first_matching_rule_wins_and_selects_the_passing_series(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    uids = chest_study(gateway, tmp_path)
    with engine.begin() as connection:
        seed_rules(connection, [THIN_CHEST, ANY_CT, DEFAULT])
        decision = route_study(connection, uids["study"], load_rules(connection))
    assert decision.rule is not None and decision.rule.name == "thin_chest_ct"
    assert decision.series_instance_uids == (uids[2],)  # 5 mm and no body part fail
    assert [e.rule_name for e in decision.evaluations] == ["thin_chest_ct"]
    assert decision.reasons == []
    explanations = decision.evaluations[0].explanations
    assert "series 2 slice_thickness 1 less_or_equal 1.5: yes" in explanations
    assert "series 1 slice_thickness 5 less_or_equal 1.5: no" in explanations
    assert "series 3 body_part_examined missing in ['chest', 'lung']: no" in explanations


def test_disabled_rule_is_skipped_and_reported(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    uids = chest_study(gateway, tmp_path)
    disabled = THIN_CHEST.model_copy(update={"enabled": False})
    with engine.begin() as connection:
        seed_rules(connection, [disabled, ANY_CT, DEFAULT])
        rules = load_rules(connection)
        decision = route_study(connection, uids["study"], rules)
        # Evaluated directly, the disabled rule would have matched.
        assert evaluate_rule(connection, rules[0], uids["study"]).matched
    assert decision.rule is not None and decision.rule.name == "any_ct"
    assert set(decision.series_instance_uids) == {uids[1], uids[2], uids[3]}
    skipped = decision.evaluations[0]
    assert (skipped.rule_name, skipped.skipped, skipped.matched) == ("thin_chest_ct", True, False)
    assert decision.reasons == ["rule 'thin_chest_ct': disabled: skipped"]


def test_default_rule_catches_what_the_others_refuse(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    sent = send_study(
        gateway,
        tmp_path / "in",
        [SeriesSpec(1, 3, modality="MR"), SeriesSpec(2, 2, modality="MR", body_part="HEAD")],
        study_description="MR BRAIN",
    )
    with engine.begin() as connection:
        seed_rules(connection, [THIN_CHEST, ANY_CT, DEFAULT])
        decision = route_study(connection, sent.study_uid, load_rules(connection))
    assert decision.rule is not None and decision.rule.name == "default"
    assert set(decision.series_instance_uids) == set(sent.series_uids.values())
    assert decision.reasons == [
        "rule 'thin_chest_ct': no series passed every series condition: "
        "series 1 modality 'MR' equals 'ct': no; series 2 modality 'MR' equals 'ct': no",
        "rule 'any_ct': no series passed every series condition: "
        "series 1 modality 'MR' equals 'CT': no; series 2 modality 'MR' equals 'CT': no",
    ]


def test_no_rule_matches_gives_every_reason(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    uids = chest_study(gateway, tmp_path)
    other_scanner = RuleSettings(
        name="other_scanner",
        conditions=[
            Condition(attribute="calling_ae", value="CTSCANNER2"),
            Condition(attribute="modality", value="CT"),
        ],
    )
    thick = RuleSettings(
        name="thick_only",
        conditions=[Condition(attribute="slice_thickness", operator="greater_than", value=6)],
    )
    with engine.connect() as connection:
        decision = route_study(connection, uids["study"], [other_scanner, thick])
    assert decision.rule is None and decision.matched is None
    assert decision.series_instance_uids == ()
    assert decision.reasons == [
        "rule 'other_scanner': study conditions failed: "
        "study calling_ae 'CTSCANNER1' equals 'CTSCANNER2': no",
        "rule 'thick_only': no series passed every series condition: "
        "series 1 slice_thickness 5 greater_than 6: no; "
        "series 2 slice_thickness 1 greater_than 6: no; "
        "series 3 slice_thickness 1 greater_than 6: no",
    ]
    with engine.connect() as connection:
        assert route_study(connection, uids["study"], []).reasons == ["no routing rules"]


def test_study_level_conditions_and_calling_ae_from_the_instances(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    uids = chest_study(gateway, tmp_path, calling_ae="CTSCANNER2")
    rule = RuleSettings(
        name="scanner2_chest",
        conditions=[
            Condition(attribute="calling_ae", operator="in", value=["ctscanner2", "ct3"]),
            Condition(attribute="study_description", operator="contains", value="chest"),
            Condition(attribute="series_instance_count", operator="greater_or_equal", value=3),
        ],
    )
    with engine.begin() as connection:
        evaluation = evaluate_rule(connection, rule, uids["study"])
        assert evaluation.matched, evaluation.reason
        assert set(evaluation.series_instance_uids) == {uids[1], uids[2]}  # 3 and 4 instances
        assert evaluation.explanations[:2] == (
            "study calling_ae 'CTSCANNER2' in ['ctscanner2', 'ct3']: yes",
            "study study_description 'CT CHEST' contains 'chest': yes",
        )
        # Without the study's first calling AE, an instance's calling AE stands in.
        connection.execute(update(Study).values(first_calling_ae=None))
        assert evaluate_rule(connection, rule, uids["study"]).matched


def test_explanations_never_name_the_patient(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    uids = chest_study(gateway, tmp_path)
    rules = [
        RuleSettings(
            name=f"r{i}",
            conditions=[
                Condition(attribute="series_description", operator="matches", value="^z"),
                Condition(attribute="study_description", operator="not_equals", value="y"),
            ],
        )
        for i in range(2)
    ]
    with engine.connect() as connection:
        decision = route_study(connection, uids["study"], rules)
    text = " ".join(decision.reasons + [x for e in decision.evaluations for x in e.explanations])
    assert "series 2 series_description 'AXIAL' matches '^z': no" in text
    assert SECRET_PATIENT_NAME not in text and SECRET_PATIENT_ID not in text
    assert "SECRETPERSON" not in text


def test_unknown_study_is_an_error(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(StudyNotFound, match=r"1\.2\.3\.4"):
        route_study(connection, "1.2.3.4", [DEFAULT])
