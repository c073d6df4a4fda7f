"""The base of every settings section: an unknown key is an error naming its section and key
(`[queue] worker_concurency = 3` would otherwise load and be dropped: pydantic ignores extra
keys by default)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SettingsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
