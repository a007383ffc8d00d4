"""Where spikeguard keeps its files: XDG user directories, or one --data-dir for all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "spikeguard"


@dataclass(frozen=True)
class AppPaths:
    data_dir: Path
    config_dir: Path
    log_dir: Path

    @classmethod
    def resolve(cls, data_dir: str | Path | None = None) -> "AppPaths":
        if data_dir:
            root = Path(data_dir).expanduser().resolve()
            return cls(root, root / "config", root / "logs")
        return cls(
            Path(platformdirs.user_data_dir(APP, appauthor=False)),
            Path(platformdirs.user_config_dir(APP, appauthor=False)),
            Path(platformdirs.user_log_dir(APP, appauthor=False)),
        )

    @property
    def user_config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def user_dotenv(self) -> Path:
        return self.config_dir / ".env"

    @property
    def journal(self) -> Path:
        return self.data_dir / "journal.db"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "spikeguard.log"

    def ensure(self) -> None:
        for d in (self.data_dir, self.config_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
