"""``features.reload``: the settings of hot config reload (:mod:`gateway.reload`).

Its own module because ``gateway.config`` imports it and ``gateway.reload`` imports ``gateway.config``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReloadConfig(BaseModel):
    """``features.reload``: watch the config file and tune how old configs are retired."""

    model_config = ConfigDict(extra="forbid")

    watch: bool = Field(default=False, description="poll the config file and reload when its content changes")
    interval_seconds: float = Field(default=2.0, gt=0, description="how often the watcher checks the file")
    drain_timeout_seconds: float = Field(
        default=600.0, gt=0, description="longest wait for requests on an old config before its clients close"
    )
    # Read from the NEW file: a reload that drops auth.master_key locks the admin API (and a later reload
    # over it) out, so the file doing it has to say so.
    allow_master_key_removal: bool = Field(
        default=False, description="let a reload apply a file without auth.master_key when one is running"
    )
