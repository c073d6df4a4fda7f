"""The registry: the built-in pipeline through its entry point, pipeline files from folders,
duplicates and bad files refused at start-up with what was expected and found; rules and the
rule editor accept registered pipelines only; the CLI lists and checks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.pipelines.lung_nodules import DESCRIPTION_FILE
from gateway.pipelines.registry import (
    PipelineFileError,
    PipelineRegistry,
    PipelineRegistrySettings,
    load_pipeline_file,
)
from gateway.settings import SettingsError, load_settings
from gateway.web.rule_edits import RuleEditError, validate_rule
from tests.conftest import free_port


def test_lung_nodules_comes_through_its_entry_point(tmp_path: Path) -> None:
    registry = PipelineRegistry.from_settings(PipelineRegistrySettings())
    pipeline = registry.get("lung_nodules")
    assert pipeline.origin == "entry point lung_nodules = gateway.pipelines.lung_nodules:pipeline"
    assert pipeline.analyser == "workers.inference.client:LungNoduleAnalyser"
    assert pipeline.description.model_key == "lung_nodule_unet:1+nodule_cnn:1"
    no_plugins = PipelineRegistry.from_settings(
        PipelineRegistrySettings(entry_points=False, dirs=[tmp_path])
    )
    assert "lung_nodules" not in no_plugins


def test_a_duplicate_name_is_refused_naming_both_origins(tmp_path: Path) -> None:
    (tmp_path / "copy.toml").write_text(DESCRIPTION_FILE.read_text())
    with pytest.raises(PipelineFileError) as caught:
        PipelineRegistry.from_settings(PipelineRegistrySettings(dirs=[tmp_path]))
    message = str(caught.value)
    assert "'lung_nodules'" in message
    assert "entry point lung_nodules" in message and str(tmp_path / "copy.toml") in message


def test_a_bad_file_stops_start_up_naming_file_field_expected_and_found(tmp_path: Path) -> None:
    text = DESCRIPTION_FILE.read_text().replace('name = "lung_nodules"', 'name = "other"')
    (tmp_path / "other.toml").write_text(text.replace('method = "argmax"', 'method = "softmax"'))
    with pytest.raises(SettingsError) as caught:
        load_settings(None, data_dir=tmp_path / "data", pipelines={"dirs": [str(tmp_path)]})
    message = str(caught.value)
    assert str(tmp_path / "other.toml") in message
    assert "segmentation.method" in message and "'argmax' or 'threshold'" in message
    assert "'softmax'" in message


def test_shapes_must_agree_with_preprocess_and_labels(tmp_path: Path) -> None:
    text = DESCRIPTION_FILE.read_text().replace(
        "output_shape = [3, 160, 160]", "output_shape = [2, 160, 160]"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = io.StringIO()
    from gateway.pipelines.listing import check_file

    assert check_file(bad, out) == 1
    assert (
        "expected output_shape [3, 160, 160] for argmax over labels [1, 2], found [2, 160, 160]"
        in out.getvalue()
    )
    assert check_file(DESCRIPTION_FILE, out) == 0


def test_rules_and_the_rule_editor_name_registered_pipelines_only(tmp_path: Path) -> None:
    rule = {"name": "liver", "pipeline": "liver_segmentation"}
    with pytest.raises(SettingsError) as caught:
        load_settings(None, data_dir=tmp_path, routing={"rules": [rule]})
    assert (
        "expected a registered pipeline ['chest_xray_nodule', 'lung_nodules'], "
        "found 'liver_segmentation'"
    ) in str(caught.value)
    with pytest.raises(RuleEditError) as edited:
        validate_rule(rule, [], ["lung_nodules"])
    assert "found 'liver_segmentation'" in str(edited.value)
    assert validate_rule({**rule, "pipeline": "lung_nodules"}, [], ["lung_nodules"]).pipeline == (
        "lung_nodules"
    )


def test_cli_lists_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[inference]\ntriton_grpc_url = "127.0.0.1:{free_port()}"\n')
    assert main(["pipelines", "--config", str(config), "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lung_nodules 1: Lung and lung nodules on chest CT" in out
    assert "origin: entry point lung_nodules" in out
    assert "model segmentation: lung_nodule_unet:1 (unknown)" in out
    assert "Triton: expected a listener" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nversion = "1"\n')
    assert main(["pipelines", "--data-dir", str(tmp_path), "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"pipeline file {bad}" in out and "title: expected a value, found none" in out


def test_the_lung_analyser_refuses_what_it_cannot_honour(tmp_path: Path) -> None:
    """3d, another slice order or FP16 in lung_nodules' file would be ignored by its code:
    refused at load instead, naming the fields."""
    from gateway.pipelines.lung_nodules import check_supported

    text = DESCRIPTION_FILE.read_text()
    changed = text.replace('context = "2.5d"', 'context = "2.5d"\nslice_order = "against_normal"')
    assert changed != text
    path = tmp_path / "lung.toml"
    path.write_text(changed)
    description = load_pipeline_file(path)
    with pytest.raises(PipelineFileError) as caught:
        check_supported(description, path)
    assert "preprocess.slice_order: expected 'along_normal'" in str(caught.value)
    assert "found 'against_normal'" in str(caught.value)
    check_supported(load_pipeline_file(DESCRIPTION_FILE), DESCRIPTION_FILE)  # as shipped
