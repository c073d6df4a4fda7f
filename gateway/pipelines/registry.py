"""The pipelines this installation runs: pipeline files from the configured folders plus
plug-ins registered under the `pacs_gateway.pipelines` entry point group (the built-in
`lung_nodules` among them). Every pipeline, built in or not, comes through here."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from pydantic import Field, ValidationError

from gateway.pipelines.description import PipelineDescription
from gateway.settings_section import SettingsSection

ENTRY_POINT_GROUP = "pacs_gateway.pipelines"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


class PipelineRegistrySettings(SettingsSection):
    """Where pipelines come from (nested in the gateway settings as ``pipelines``)."""

    dirs: list[Path] = Field(
        default_factory=lambda: [BUNDLED_DIR],
        description="Folders of pipeline files (*.toml), read at start-up; a bad file stops "
        "start-up. Plug-ins of the `pacs_gateway.pipelines` entry point group come on top.",
    )
    entry_points: bool = Field(
        default=True, description="Load plug-ins of the `pacs_gateway.pipelines` group."
    )


class PipelineFileError(ValueError):
    """A pipeline file that cannot be used: names the file, each field, what was expected
    and what was found."""


@dataclass(frozen=True)
class Pipeline:
    """A registered pipeline: its description, where it came from, and optionally code."""

    description: PipelineDescription
    origin: str
    """'file /path/x.toml' or 'entry point name = module:attr'."""
    analyser: str | None = None
    """'module:attribute' of the analyser factory the workers call, for pipelines that need
    code; None: the generic analyser runs the description as is."""

    @property
    def name(self) -> str:
        return self.description.name


def _found(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_validation_error(path: Path | str, exc: ValidationError) -> str:
    lines = [f"pipeline file {path}: {exc.error_count()} error(s)"]
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"]) or "(file)"
        if error["type"] == "missing":
            lines.append(f"  {loc}: expected a value, found none")
        else:
            msg = error["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc}: {msg}; found {_found(error.get('input'))}")
    return "\n".join(lines)


def load_pipeline_file(path: Path) -> PipelineDescription:
    """Parse and validate one pipeline file; raises PipelineFileError saying why not."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PipelineFileError(f"pipeline file {path}: cannot be read: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PipelineFileError(f"pipeline file {path}: expected TOML, found: {exc}") from exc
    try:
        return PipelineDescription.model_validate(data)
    except ValidationError as exc:
        raise PipelineFileError(describe_validation_error(path, exc)) from exc


def file_pipeline(path: Path, analyser: str | None = None, origin: str | None = None) -> Pipeline:
    return Pipeline(load_pipeline_file(path), origin or f"file {path}", analyser)


class PipelineRegistry:
    """Registered pipelines by name; duplicates are refused with both origins named."""

    def __init__(self, pipelines: Iterable[Pipeline] = ()) -> None:
        self._pipelines: dict[str, Pipeline] = {}
        for pipeline in pipelines:
            self.add(pipeline)

    def add(self, pipeline: Pipeline) -> None:
        earlier = self._pipelines.get(pipeline.name)
        if earlier is not None:
            raise PipelineFileError(
                f"pipeline {pipeline.name!r}: expected one registration, found two: "
                f"{earlier.origin} and {pipeline.origin}"
            )
        self._pipelines[pipeline.name] = pipeline

    def get(self, name: str) -> Pipeline:
        pipeline = self._pipelines.get(name)
        if pipeline is None:
            raise KeyError(
                f"expected a registered pipeline, found {name!r} (registered: {self.names})"
            )
        return pipeline

    def __contains__(self, name: object) -> bool:
        return name in self._pipelines

    def __iter__(self) -> Iterator[Pipeline]:
        return iter(sorted(self._pipelines.values(), key=lambda p: p.name))

    def __len__(self) -> int:
        return len(self._pipelines)

    @property
    def names(self) -> list[str]:
        return sorted(self._pipelines)

    @classmethod
    def from_settings(
        cls,
        settings: PipelineRegistrySettings,
        plugins: Callable[[], Iterable[EntryPoint]] | None = None,
    ) -> PipelineRegistry:
        registry = cls()
        if settings.entry_points:
            for entry in (plugins or _entry_points)():
                registry.add(_from_entry_point(entry))
        for folder in settings.dirs:
            if not folder.is_dir():
                raise PipelineFileError(
                    f"pipelines.dirs: expected a folder of pipeline files, found none at {folder}"
                )
            for path in sorted(folder.glob("*.toml")):
                registry.add(file_pipeline(path))
        return registry


def _entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=ENTRY_POINT_GROUP)


def _from_entry_point(entry: EntryPoint) -> Pipeline:
    origin = f"entry point {entry.name} = {entry.value}"
    try:
        factory = entry.load()
        pipeline = factory()
    except PipelineFileError:
        raise
    except Exception as exc:
        raise PipelineFileError(f"{origin}: failed to load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(pipeline, Pipeline):
        raise PipelineFileError(f"{origin}: expected a Pipeline, found {type(pipeline).__name__}")
    if pipeline.name != entry.name:
        raise PipelineFileError(
            f"{origin}: expected the pipeline named {entry.name!r}, found {pipeline.name!r}"
        )
    return Pipeline(pipeline.description, origin, pipeline.analyser)
