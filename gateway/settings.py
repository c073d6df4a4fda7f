"""The gateway's one settings object.

Loaded once per entry point (CLI subcommand, worker, test) and passed down; nothing reads
the environment on its own. Precedence, highest first: explicit overrides (CLI options),
environment variables (``PACS_GATEWAY_...``, nested with ``__``), the TOML config file,
defaults.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.ae_title import check_ae_title
from gateway.completion.config import CompletionSettings
from gateway.delivery.config import DeliverySettings, Destination
from gateway.dicomweb.config import DicomWebServerSettings
from gateway.inference_config import InferenceSettings
from gateway.monitoring.config import ModelWatchSettings
from gateway.pipelines.registry import PipelineRegistry, PipelineRegistrySettings
from gateway.pull.config import PullSettings
from gateway.queue.config import QueueSettings
from gateway.results.config import ResultsSettings
from gateway.routing.config import RoutingSettings
from gateway.settings_section import SettingsSection
from gateway.web.config import WebSettings

ENV_PREFIX = "PACS_GATEWAY_"

# Sections an older release had under another name: a config that still uses one stops
# start-up saying where its settings went (rather than pydantic's "extra inputs").
RENAMED_SECTIONS = {
    "pipeline": "settings section 'pipeline' was renamed 'queue' (broker and worker "
    "settings); 'pipeline' now names a plug-in",
}


class AllowedPeer(SettingsSection):
    """A calling application entity allowed to associate: AE title plus source network."""

    ae_title: str = Field(description="Calling AE title, or '*' for any title from `host`.")
    host: str = Field(
        description="Source IP address or CIDR network, e.g. 10.1.2.3 or 10.1.0.0/16."
    )

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return value if value == "*" else check_ae_title(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"expected an IP address or CIDR network, found {value!r}") from exc
        return value


class TLSSettings(SettingsSection):
    """Optional DICOM TLS listener on a second port; mutual TLS when `ca_file` is set."""

    port: int | None = Field(default=None, ge=1, le=65535)
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = Field(
        default=None, description="CA bundle for client certificates; set means mutual TLS."
    )

    @model_validator(mode="after")
    def _complete(self) -> TLSSettings:
        if self.port is not None:
            missing = [n for n in ("cert_file", "key_file") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"TLS port set, so expected {', '.join(missing)} too, found none")
            for name in ("cert_file", "key_file", "ca_file"):
                path = getattr(self, name)
                if path is not None and not Path(path).is_file():
                    raise ValueError(f"{name}: expected an existing file, found {path}")
        return self


class DicomSettings(SettingsSection):
    """The DICOM listener (Storage SCP and Verification SCP)."""

    ae_title: str = "PACSGATEWAY"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=1, le=65535)
    require_called_ae_title: bool = True
    allowed_peers: list[AllowedPeer] = Field(
        default_factory=list,
        description="Who may associate. Empty means nobody: deny by default.",
    )
    max_associations: int = Field(default=16, ge=1, le=1000)
    max_pdu_size: int = Field(default=262_144, ge=0, description="0 means unlimited")
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    pdu_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A PDU must arrive whole within this long of its first byte (the "
        "A-ASSOCIATE-RQ within acse_timeout_s of the connection).",
    )
    max_pending_connections: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Connections without an association yet, over all addresses; when full, "
        "the oldest is closed. Separate from max_associations.",
    )
    max_pending_per_address: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Connections without an association per address (a PACS may open "
        "several associations at once).",
    )
    max_connections_per_address: int = Field(
        default=32, ge=1, le=10_000, description="Connections of any kind per source address."
    )
    rejection_audit_window_s: float = Field(
        default=60.0,
        gt=0,
        description="Refusals of one address for one reason within this window: the first "
        "is audited at once, the rest as one row with their count.",
    )
    listener_processes: int = Field(
        default=1, ge=1, le=64, description="Listener processes; associations spread over them."
    )
    tcp_quickack: bool = Field(
        default=True,
        description="ACK at once so senders without TCP_NODELAY do not stall on delayed ACKs.",
    )
    max_dataset_mb: int = Field(
        default=1024,
        ge=1,
        description="Largest C-STORE dataset held in memory while its P-DATA arrive; beyond it "
        "the rest is discarded and 0xA700 answered. Worst case max_associations x this.",
    )
    max_inflated_mb: int = Field(
        default=1024,
        ge=1,
        description="Largest Deflated Explicit VR Little Endian body once inflated; a bigger "
        "one (a deflate bomb) is refused with 0xA700 while inflating, never held whole.",
    )
    max_sequence_depth: int = Field(
        default=64,
        ge=1,
        le=128,
        description="Deepest nesting of sequences accepted; deeper is refused with 0xC210 "
        "(pydicom recurses per level and fails between 150 and 200).",
    )
    tls: TLSSettings = Field(default_factory=TLSSettings)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return check_ae_title(value)


class StorageSettings(SettingsSection):
    """Spool and free-space guard."""

    min_free_mb: int = Field(
        default=1024, ge=0, description="Below this much free space C-STORE answers 0xA700."
    )
    fsync: bool = Field(default=True, description="Only turn off for throwaway test data.")
    orphan_grace_s: float = Field(
        default=3600.0,
        ge=300.0,
        description="A spool file that no instance row names (the commit after the write "
        "failed) is removed once this old; far longer than any C-STORE in flight.",
    )
    orphan_sweep_interval_s: float = Field(
        default=600.0, gt=0, description="How often the spool is searched for orphan files."
    )
    retention_days: int | None = Field(
        default=None,
        ge=0,
        description="Purge the spool files of studies last received this many days ago once "
        "every job ended and every result was delivered (gateway/retention/); rows and audit "
        "stay. None: keep every file. The pass runs with the orphan sweep.",
    )


class AssemblySettings(SettingsSection):
    """Study completeness by quiet period."""

    quiet_period_s: float = Field(default=30.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)


class PrefetchSettings(SettingsSection):
    """Decode and preprocess series while their instances arrive (workers/prefetch/,
    docs/pipeline.md "Prefetch"); the cache lives in `<data_dir>/prefetch/`."""

    enabled: bool = Field(
        default=True,
        description="`serve` runs the prefetcher in a process of its own; workers use the cache.",
    )
    grids: bool = Field(
        default=True, description="Also make the model-grid slices of the pipelines' models."
    )
    poll_interval_s: float = Field(
        default=0.1, gt=0, description="New instances checked this often."
    )
    lookback_s: float = Field(
        default=600.0, ge=0, description="At start, instances received this recently are taken."
    )
    max_age_s: float = Field(
        default=3600.0,
        gt=0,
        description="A series' cache untouched this long is removed (it holds pixel data).",
    )
    nice: int = Field(
        default=10, ge=0, le=19, description="The process's niceness: ingest goes first."
    )
    idle_priority: bool = Field(
        default=True,
        description="Run at the idle CPU and disk scheduling class (Linux): only what the "
        "listener, workers and Triton leave.",
    )
    defer_above_per_s: float = Field(
        default=50.0,
        gt=0,
        description="While instances arrive faster than this (a sender at full speed), wait "
        "for the burst to end: the listener needs the CPUs.",
    )


class GatewaySettings(BaseSettings):
    """Everything the gateway needs to run; validated at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in the data dir."
    )
    http_port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    dicom: DicomSettings = Field(default_factory=DicomSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    assembly: AssemblySettings = Field(default_factory=AssemblySettings)
    prefetch: PrefetchSettings = Field(default_factory=PrefetchSettings)
    completion: CompletionSettings = Field(
        default_factory=CompletionSettings,
        description="Completion signals: MPPS, storage commitment (docs/receiving.md).",
    )
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    results: ResultsSettings = Field(default_factory=ResultsSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    destinations: list[Destination] = Field(
        default_factory=list, description="Where results go (C-STORE or STOW-RS)."
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    queue: QueueSettings = Field(
        default_factory=QueueSettings,
        description="The job queue: Celery broker, workers, task time limits and retries.",
    )
    pipelines: PipelineRegistrySettings = Field(
        default_factory=PipelineRegistrySettings,
        description="Where pipelines (model plug-ins) come from: pipeline files and entry points.",
    )
    web: WebSettings = Field(default_factory=WebSettings)
    dicomweb: DicomWebServerSettings = Field(default_factory=DicomWebServerSettings)
    pull: PullSettings = Field(default_factory=PullSettings)
    monitoring: ModelWatchSettings = Field(
        default_factory=ModelWatchSettings,
        description="Model watch: daily statistics per pipeline version, control limits.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_renamed_sections(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, message in RENAMED_SECTIONS.items():
                if old in data:
                    raise PydanticCustomError("renamed_section", message)
        return data

    @model_validator(mode="after")
    def _rule_pipelines_registered(self) -> GatewaySettings:
        """Every rule names a registered pipeline; a bad pipeline file stops start-up here."""
        registry = self.pipeline_registry()
        for rule in self.routing.rules:
            if rule.pipeline not in registry:
                raise ValueError(
                    f"routing rule {rule.name!r}: expected a registered pipeline "
                    f"{registry.names}, found {rule.pipeline!r}"
                )
            if rule.shadow_pipeline is not None and (
                rule.shadow_pipeline not in registry or rule.shadow_pipeline == rule.pipeline
            ):
                raise ValueError(
                    f"routing rule {rule.name!r}: shadow_pipeline: expected a registered "
                    f"pipeline other than {rule.pipeline!r} {registry.names}, found "
                    f"{rule.shadow_pipeline!r}"
                )
        return self

    def pipeline_registry(self) -> PipelineRegistry:
        """The registered pipelines (files read and plug-ins loaded on each call)."""
        return PipelineRegistry.from_settings(self.pipelines)

    @model_validator(mode="after")
    def _rule_destinations_exist(self) -> GatewaySettings:
        known = set(self.destination_names)
        for rule in self.routing.rules:
            unknown = sorted(set(rule.destinations or []) - known)
            if unknown:
                raise ValueError(
                    f"routing rule {rule.name!r}: expected destinations among "
                    f"{sorted(known)}, found {unknown}"
                )
        return self

    @field_validator("destinations")
    @classmethod
    def _unique_destinations(cls, value: list[Destination]) -> list[Destination]:
        names = [d.name for d in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"expected unique destination names, found {duplicates} twice")
        return value

    def destination(self, name: str) -> Destination:
        for destination in self.destinations:
            if destination.name == name:
                return destination
        raise KeyError(f"expected a destination named {name!r}, found {self.destination_names}")

    @property
    def destination_names(self) -> list[str]:
        return [d.name for d in self.destinations]

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_without_secret_files = EnvWithoutSecretFiles(settings_cls, env_settings)
        return (init_settings, env_without_secret_files, TomlConfigSettingsSource(settings_cls))

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"


class SettingsError(Exception):
    """Start-up configuration is invalid; the message names each bad setting."""


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        if error["type"] == "renamed_section":  # says itself which section
            lines.append(error["msg"])
            continue
        name = ".".join(str(part) for part in error["loc"]) or "(settings)"
        found = error.get("input")
        if error["type"] == "extra_forbidden" and len(error["loc"]) > 1:
            # A typo in a section was dropped silently before every section forbade extras.
            *section, key = (str(part) for part in error["loc"])
            lines.append(
                f"setting {name}: expected a known key of section [{'.'.join(section)}], "
                f"found unknown key {key!r} (a typo?)"
            )
            continue
        found_text = "" if isinstance(found, dict) else f" (found {found!r})"
        lines.append(f"setting {name}: {error['msg']}{found_text}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def _is_setting(model: Any, path: list[str]) -> bool:
    """Whether `path` (section, ..., key) names a field of the settings model."""
    for part in path:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return False
        annotation = fields[part].annotation
        candidates = (annotation, *get_args(annotation))
        model = next((a for a in candidates if hasattr(a, "model_fields")), None)
    return True


def secret_file_paths(environ: Mapping[str, str]) -> dict[str, list[str]]:
    """The variables `PACS_GATEWAY_<SETTING>_FILE` that name a secret file, with the path of
    the setting they fill; not those that are settings themselves (dicom.tls.cert_file)."""
    prefix = ENV_PREFIX.upper()
    paths: dict[str, list[str]] = {}
    for name in environ:
        upper = name.upper()
        if not (upper.startswith(prefix) and upper.endswith("_FILE")):
            continue
        path = upper[len(prefix) :].lower().split("__")
        if not _is_setting(GatewaySettings, path):
            paths[name] = [*path[:-1], path[-1].removesuffix("_file")]
    return paths


class EnvWithoutSecretFiles(PydanticBaseSettingsSource):
    """The environment source less the secret-file variables (secret_file_values reads
    those): pydantic-settings would pass PACS_GATEWAY_WEB__SECRET_KEY_FILE on as an unknown
    key `secret_key_file` of [web], which every section refuses."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.env.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = self.env()
        for *parents, leaf in secret_file_paths(os.environ).values():
            node: Any = values
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(f"{leaf}_file", None)
        return values


def secret_file_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings whose value is a file's content: `PACS_GATEWAY_DATABASE_URL_FILE=/run/secrets/
    database_url`, `PACS_GATEWAY_WEB__SECRET_KEY_FILE=...` (compose and Kubernetes secrets),
    as nested values; a trailing newline is dropped. They win over the plain variable and
    the TOML file, so a secret never has to be in either."""
    values: dict[str, Any] = {}
    for name, (*parents, leaf) in secret_file_paths(environ).items():
        path = environ[name]
        if not path:
            continue
        try:
            content = Path(path).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as exc:
            raise SettingsError(
                f"setting {name}: expected a readable secret file, found {path} ({exc.strerror})"
            ) from None
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = content
    return values


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> GatewaySettings:
    """Build the settings from overrides, environment (with *_FILE secrets) and an
    optional TOML file.

    Raises SettingsError naming every bad setting.
    """
    if config_file is not None and not config_file.is_file():
        raise SettingsError(f"setting config: expected an existing TOML file, found {config_file}")
    overrides = _merged(secret_file_values(os.environ), overrides)
    # pydantic-settings ignores environment variables of unknown sections: say so instead.
    for old, message in RENAMED_SECTIONS.items():
        prefix = f"{ENV_PREFIX}{old}__".upper()
        stale = sorted(name for name in os.environ if name.upper().startswith(prefix))
        if stale:
            raise SettingsError(f"invalid settings:\n  {message} (found {', '.join(stale)})")
    settings_cls: type[GatewaySettings] = GatewaySettings
    if config_file is not None:
        # A subclass per call carries the file path without any global state.
        settings_cls = type(
            "GatewaySettingsFromFile",
            (GatewaySettings,),
            {"model_config": {**GatewaySettings.model_config, "toml_file": config_file}},
        )
    try:
        return settings_cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from exc
