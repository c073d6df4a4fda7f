"""The model watch pages in a real browser (headless Chromium through Selenium): the daily
table with its amber day and sparklines drawn (the stylesheet applies under the CSP), the
comparison of a rule's shadow, and a promotion through its confirmation page. Saves
screenshots (into docs/screenshots/ with `make screenshots`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine, select

from gateway.audit import utcnow
from gateway.models import Job, RoutingRule
from gateway.monitoring.outcome import StudyOutcome
from gateway.shadow.compare import Comparison, SegmentMatch
from gateway.shadow.record import ShadowPair, save_comparison
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.monitoring.job_rows import add_jobs
from tests.monitoring.test_shadow_jobs import CANDIDATE, candidate_pipelines
from tests.web.conftest import (
    PASSWORD,
    WAIT_S,
    screenshot_dir,
    served,
    sign_in_browser,
    web_settings,
)
from tests.web.test_model_watch import RULE, drifted_history, midnight, rule_with_shadow


def _wait_for(driver: WebDriver, css: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def shadow_history(engine: Engine, studies: int = 12) -> None:
    """A candidate that mostly agrees: nodules matched with high Dice, a few disagreements."""
    rng = np.random.default_rng(31)
    scores = [float(s) for s in np.clip(rng.normal(0.45, 0.25, studies), 0.02, 0.98)]
    shadow_scores = [float(np.clip(s + rng.normal(0.03, 0.06), 0.01, 0.99)) for s in scores]
    shadow_scores[4] = 0.38 if scores[4] >= 0.5 else 0.62  # one study they disagree on
    primaries = add_jobs(engine, midnight(1), scores)
    shadows = [
        add_jobs(engine, midnight(1), [s], pipeline=CANDIDATE, version="2", shadow_of=p)[0]
        for p, s in zip(primaries, shadow_scores, strict=True)
    ]
    with engine.begin() as connection:
        for k, (primary_id, shadow_id) in enumerate(zip(primaries, shadows, strict=True)):
            uid = connection.execute(
                select(Job.study_instance_uid).where(Job.id == primary_id)
            ).scalar_one()
            lung_dice = round(0.985 + 0.01 * rng.random(), 3)
            nodules = [
                SegmentMatch(
                    "nodule", "nodule-1", "nodule-1", round(0.7 + 0.25 * rng.random(), 3), 5, 5
                )
            ]
            if k % 5 == 3:
                nodules.append(SegmentMatch("nodule", None, "nodule-2", 0.0, 0, 3))
            score, shadow_score = scores[k], shadow_scores[k]
            save_comparison(
                connection,
                ShadowPair(primary_id, shadow_id, uid),
                Comparison(
                    StudyOutcome(score, score >= 0.5, 1),
                    StudyOutcome(shadow_score, shadow_score >= 0.5, len(nodules)),
                    (SegmentMatch("lung", "lung", "lung", lung_dice, 9, 9), *nodules),
                ),
                utcnow(),
            )


def test_model_watch_comparison_and_promotion(
    browser: WebDriver, tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = web_settings(
        tmp_path / "data",
        database_url,
        pipelines={"dirs": [str(candidate_pipelines(tmp_path / "pipelines"))]},
    )
    create_user(engine, settings.web, "admin", PASSWORD, Role.ADMIN, actor="test")
    drifted_history(engine)
    rule_id = rule_with_shadow(engine)
    shadow_history(engine)
    shots = screenshot_dir(tmp_path, database_url)
    shots.mkdir(parents=True, exist_ok=True)
    with served(create_app(settings, engine)) as base:
        browser.get(base + "/models/watch")
        sign_in_browser(browser, "admin")
        _wait_for(browser, "section.version")

        amber = browser.find_element(By.CSS_SELECTOR, 'tr[data-status="amber"]')
        assert amber.get_attribute("data-day") == midnight(1).date().isoformat()
        cell = amber.find_element(By.CSS_SELECTOR, 'td[data-statistic="score_mean"]')
        # model_watch.css applied (same origin, no inline style): the amber cell is shaded.
        assert cell.value_of_css_property("background-color") == "rgba(255, 240, 204, 1)"
        spark = browser.find_element(By.CSS_SELECTOR, "svg.sparkline")
        assert spark.size["width"] == 180 and spark.size["height"] == 40
        assert browser.find_elements(By.CSS_SELECTOR, "svg.sparkline circle.dot.amber")
        browser.save_screenshot(str(shots / "model-watch.png"))

        browser.find_element(By.ID, "shadow-link").click()
        _wait_for(browser, "table#shadow-rules")
        browser.find_element(By.ID, f"compare-{RULE}").click()
        _wait_for(browser, "table#comparisons")
        rows = browser.find_elements(By.CSS_SELECTOR, "table#comparisons tr[data-study]")
        assert len(rows) == 12
        classes = [r.get_attribute("class") or "" for r in rows]
        assert classes.count("disagree") == 1 and classes[0] == "disagree"  # shown first
        assert rows[0].value_of_css_property("background-color") == "rgba(0, 0, 0, 0)"
        cell = rows[0].find_element(By.CSS_SELECTOR, "td.agree")
        assert cell.text == "no" and cell.value_of_css_property("background-color") == (
            "rgba(255, 240, 204, 1)"
        )
        browser.save_screenshot(str(shots / "model-shadow.png"))

        browser.find_element(By.ID, "promote").click()
        _wait_for(browser, "#evidence")
        browser.save_screenshot(str(shots / "model-promote.png"))
        browser.find_element(By.ID, "confirm").click()
        browser.find_element(By.ID, "promote-confirm").click()
        _wait_for(browser, "p.flash.info")
        assert f"{CANDIDATE} promoted" in browser.page_source
        with engine.connect() as connection:
            pipeline, shadow = connection.execute(
                select(RoutingRule.pipeline, RoutingRule.shadow_pipeline).where(
                    RoutingRule.id == rule_id
                )
            ).one()
        assert (pipeline, shadow) == (CANDIDATE, None)
