"""The admin UI in a real browser (headless Chromium through Selenium): sign in, see the
dashboard, open a study and its preview picture, change a rule, test a destination against
a real Verification SCP. Saves screenshots of the main pages (into docs/screenshots/ with
`make screenshots`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine, select
from werkzeug.serving import make_server

from gateway.models import AuditEvent, RoutingRule
from gateway.routing.config import RuleSettings
from gateway.web import create_app
from gateway.web.rule_edits import create_rule
from gateway.web.users import Role, create_user
from tests.conftest import free_port
from tests.web.conftest import PASSWORD, WAIT_S, screenshot_dir, web_settings
from tests.web.study_data import PATIENT_NAME, store_study


@pytest.fixture
def verification_scp() -> Iterator[int]:
    port = free_port()
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_ECHO, lambda event: 0)]
    )
    yield port
    server.shutdown()


def _wait_for(driver: WebDriver, css: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def test_sign_in_study_preview_rule_and_destination(
    browser: WebDriver,
    tmp_path: Path,
    database_url: str,
    engine: Engine,
    verification_scp: int,
) -> None:
    settings = web_settings(
        tmp_path / "data",
        database_url,
        destinations=[
            {
                "kind": "dicom",
                "name": "pacs",
                "ae_title": "PACS",
                "host": "127.0.0.1",
                "port": verification_scp,
            }
        ],
    )
    create_user(engine, settings.web, "admin", PASSWORD, Role.ADMIN, actor="test")
    study = store_study(settings, engine, tmp_path / "study")
    create_rule(
        engine,
        RuleSettings(name="chest-ct", conditions=[{"attribute": "modality", "value": "CT"}]),
        actor="test",
        address="127.0.0.1",
    )
    create_rule(engine, RuleSettings(name="default"), actor="test", address="127.0.0.1")
    shots = screenshot_dir(tmp_path, database_url)
    shots.mkdir(parents=True, exist_ok=True)
    server = make_server("127.0.0.1", 0, create_app(settings, engine), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        # Sign in: any page sends a signed-out user to the sign-in form first.
        browser.get(base + "/studies")
        _wait_for(browser, "#login-form")
        browser.save_screenshot(str(shots / "login.png"))
        browser.find_element(By.ID, "username").send_keys("admin")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "sign-in").click()
        _wait_for(browser, "table#studies")
        assert study.study_uid in browser.page_source
        browser.save_screenshot(str(shots / "studies.png"))

        browser.get(base + "/")
        _wait_for(browser, "#queue-depth")
        assert "jobs failed in the last hour" in browser.page_source
        browser.save_screenshot(str(shots / "dashboard.png"))

        # The study page with its preview picture (loaded and decoded by the browser).
        browser.find_element(By.LINK_TEXT, "Studies").click()
        _wait_for(browser, "table#studies")
        browser.find_element(By.LINK_TEXT, study.study_uid).click()
        _wait_for(browser, f"#preview-{study.job_id}")
        image = browser.find_element(By.ID, f"preview-{study.job_id}")
        WebDriverWait(browser, WAIT_S).until(
            lambda d: d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", image
            )
        )
        assert browser.execute_script("return arguments[0].naturalHeight", image) == 256
        assert PATIENT_NAME in browser.find_element(By.ID, "patient-identity").text
        browser.save_screenshot(str(shots / "study.png"))
        browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", image)
        browser.save_screenshot(str(shots / "study-preview.png"))

        # Change a rule through the form.
        browser.get(base + "/rules")
        _wait_for(browser, "table#rules")
        browser.find_element(By.ID, "edit-chest-ct").click()
        _wait_for(browser, "#rule-form")
        conditions = browser.find_element(By.ID, "rule-conditions")
        conditions.clear()
        conditions.send_keys("modality equals CT\nslice_thickness less_or_equal 5")
        browser.find_element(By.ID, "save-rule").click()
        _wait_for(browser, "table#rules")
        assert "Rule chest-ct saved." in browser.page_source
        browser.find_element(By.ID, "up-default").click()
        _wait_for(browser, "table#rules")
        browser.save_screenshot(str(shots / "rules.png"))
        with engine.connect() as connection:
            rows = connection.execute(
                select(RoutingRule.name, RoutingRule.conditions).order_by(RoutingRule.position)
            ).all()
        assert [r.name for r in rows] == ["default", "chest-ct"]
        assert rows[1].conditions[1] == {
            "attribute": "slice_thickness",
            "operator": "less_or_equal",
            "value": 5.0,
        }

        # The rule tester explains each condition.
        browser.get(base + "/rules")
        _wait_for(browser, "table#rules")
        browser.find_elements(By.LINK_TEXT, "test")[1].click()
        _wait_for(browser, "#test-study")
        browser.find_element(By.ID, "test-study").send_keys(study.study_uid)
        browser.find_element(By.ID, "run-test").click()
        _wait_for(browser, "#test-result")
        assert "Matches" in browser.find_element(By.ID, "test-result").text
        browser.save_screenshot(str(shots / "rule-test.png"))

        # Test a destination: a C-ECHO to the Verification SCP.
        browser.get(base + "/destinations")
        _wait_for(browser, "#test-pacs")
        browser.find_element(By.ID, "test-pacs").click()
        _wait_for(browser, "#result-pacs")
        assert browser.find_element(By.ID, "result-pacs").text.startswith("OK")
        browser.save_screenshot(str(shots / "destinations.png"))

        for page, css, name in (
            ("/audit", "table#audit", "audit.png"),
            ("/users", "table#users", "users.png"),
        ):
            browser.get(base + page)
            _wait_for(browser, css)
            browser.save_screenshot(str(shots / name))
    finally:
        server.shutdown()
        thread.join(timeout=30)
    with engine.connect() as connection:
        kinds = set(
            connection.execute(select(AuditEvent.kind).where(AuditEvent.actor == "admin")).scalars()
        )
    assert {"user.login", "rule.updated", "rule.moved", "destination.tested"} <= kinds
    for name in ("login", "dashboard", "studies", "study", "study-preview", "rules", "audit"):
        assert (shots / f"{name}.png").stat().st_size > 5000
