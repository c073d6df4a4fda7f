"""The alert rules evaluated for real: `promtool check rules` and `promtool test rules` on
deploy/prometheus/alerts.yml and its unit tests alerts_test.yml (each alert fires on a series
over its threshold for long enough, with its labels and annotations, and stays quiet on
another), and both files tied to what /metrics exports: every metric a rule asks for, and
every input series of the unit tests with exactly the exporter's labels."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient
from sqlalchemy import Engine, update

from gateway.audit import utcnow
from gateway.models import Job, JobState
from gateway.settings import GatewaySettings
from tests.conftest import REPO
from tests.monitoring.job_rows import add_jobs
from tests.web.conftest import web_settings
from tests.web.job_rows import add_delivery
from tests.web.prometheus_text import LABEL_RE, ParsedFamily, parse

RULES_DIR = REPO / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERTS_TEST = RULES_DIR / "alerts_test.yml"
METRIC = re.compile(r"\bpacs_gateway_[a-z0-9_]+")
SERIES = re.compile(r"^(pacs_gateway_[a-z0-9_]+)\{(.*)\}$")
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus when it scrapes, not by /metrics
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
TIMEOUT_S = 60


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "expected promtool (Debian package prometheus; scripts/ensure-system-packages.sh "
            "installs it), found none on PATH"
        )
    return path


def _promtool_run(*args: str) -> str:
    done = subprocess.run(
        [_promtool(), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, (
        f"expected `promtool {' '.join(args)}` to exit 0, found {done.returncode}:\n{output}"
    )
    return output


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _unit_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    return tests


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    checked = _promtool_run("check", "rules", str(ALERTS.relative_to(REPO)))
    assert f"SUCCESS: {len(_rules())} rules found" in checked, checked
    tested = _promtool_run("test", "rules", str(ALERTS_TEST.relative_to(REPO)))
    assert "SUCCESS" in tested, tested


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in _unit_tests():
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts - fires == set(), (
        f"expected a firing case of each alert, found none for {alerts - fires}"
    )
    assert alerts - quiet == set(), (
        f"expected a quiet case of each alert, found none for {alerts - quiet}"
    )
    assert fires | quiet <= alerts, (
        f"unit tests of alerts not in alerts.yml: {(fires | quiet) - alerts}"
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> GatewaySettings:
    """The web tests' settings, with a baseline of 10 studies so the model watch exports."""
    return web_settings(
        tmp_path / "data",
        database_url,
        destinations=[
            {"kind": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1},
        ],
        monitoring={"baseline_studies": 10},
    )


def _seed(engine: Engine) -> None:
    """Rows that make /metrics export a sample of every family the rules ask for: a
    pipeline version past its 10-study baseline with a shifted day (jobs delivered, one
    failed), and a destination that confirmed an object, then failed on the next."""
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    add_jobs(engine, midnight - timedelta(days=3), [0.3, 0.32, 0.28, 0.31, 0.29] * 2)
    add_jobs(engine, midnight - timedelta(days=1), [0.9] * 10, failed=1)
    with engine.begin() as connection:  # delivered as they finished: a turnaround each
        connection.execute(
            update(Job).where(Job.state == JobState.DELIVERED).values(delivered_at=Job.finished_at)
        )
    uid = "1.2.826.0.1.3680043.10.1234.999999"
    add_delivery(engine, uid, "pacs", now - timedelta(hours=1), now - timedelta(minutes=40))
    add_delivery(engine, uid, "pacs", now - timedelta(minutes=20), None, "0xA700")


def _scrape(client: FlaskClient) -> dict[str, ParsedFamily]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse(response.get_data(as_text=True))


def _label_keys(families: dict[str, ParsedFamily]) -> dict[str, set[frozenset[str]]]:
    """Each exported series name (a histogram's with its suffixes) and its label key sets."""
    keys: dict[str, set[frozenset[str]]] = {}
    for name, family in families.items():
        names = [name + s for s in HISTOGRAM_SUFFIXES] if family.kind == "histogram" else [name]
        for series in names:
            keys.setdefault(series, set())
        for (series, labels), _value in family.samples.items():
            keys.setdefault(series, set()).add(frozenset(k for k, _v in labels))
    return keys


def _input_series() -> list[tuple[str, dict[str, str]]]:
    found = []
    for test in _unit_tests():
        for item in test["input_series"]:
            match = SERIES.fullmatch(item["series"])
            assert match, f"expected name{{labels}} in alerts_test.yml, found {item['series']}"
            found.append((match[1], {k: v for k, v in LABEL_RE.findall(match[2])}))
    return found


def test_rules_and_their_unit_tests_use_what_metrics_exports(
    client_as: Callable[[str | None], FlaskClient], engine: Engine
) -> None:
    _seed(engine)
    families = _scrape(client_as(None))
    exported = _label_keys(families)

    used = {m for rule in _rules() for m in METRIC.findall(rule["expr"])}
    assert used, "expected pacs_gateway_ metrics in alerts.yml, found none"
    assert used <= set(exported), (
        f"alerts.yml asks for metrics /metrics does not export: {used - set(exported)}"
    )

    buckets = {
        dict(labels)["le"]
        for family in families.values()
        for (series, labels), _v in family.samples.items()
        if series.endswith("_bucket")
    }
    for name, labels in _input_series():
        assert name in exported, f"alerts_test.yml feeds {name}, which /metrics does not export"
        assert exported[name], f"expected a sample of {name} from the seeded /metrics, found none"
        keys = frozenset(labels) - SCRAPE_LABELS
        assert keys in exported[name], (
            f"alerts_test.yml feeds {name} with labels {sorted(keys)}, "
            f"expected one of {[sorted(k) for k in exported[name]]}"
        )
        if "le" in labels:
            assert labels["le"] in buckets, f"expected an exported le, found le={labels['le']}"
    fed = {name for name, _labels in _input_series()}
    assert used <= fed, f"alerts_test.yml feeds no series of {used - fed}"
