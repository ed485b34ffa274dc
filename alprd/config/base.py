"""What every config section shares: strictness, and paths relative to the config file."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CREDENTIALS = Path("/run/credentials/alprd.service")
"""systemd's $CREDENTIALS_DIRECTORY for alprd.service (LoadCredential=); secrets default to files there."""


def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths in a config file are relative to that file, not to the working directory."""
    base = (info.context or {}).get("base_dir")
    if base is not None and value is not None and not value.is_absolute():
        return Path(base) / value
    return value
