"""Where spikeguard keeps its files: XDG user directories, or one --data-dir for all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "spikeguard"


class DataDirError(ValueError):
    """A directory spikeguard needs is a file, or cannot be created: one line naming it."""


@dataclass(frozen=True)
class AppPaths:
    data_dir: Path
    config_dir: Path
    log_dir: Path

    @classmethod
    def resolve(cls, data_dir: str | Path | None = None) -> "AppPaths":
        """DataDirError when `data_dir` (or the nearest part of it that exists) is not a directory."""
        if data_dir:
            try:
                root = Path(data_dir).expanduser().resolve()
            except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
                raise DataDirError(f"--data-dir {data_dir}: {exc}") from None
            _refuse_non_directory(root, f"--data-dir {data_dir}")
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

    def ensure(self, *dirs: Path) -> None:
        """Create `dirs` (default: all three). DataDirError names the one that cannot be."""
        for d in dirs or (self.data_dir, self.config_dir, self.log_dir):
            _refuse_non_directory(d, str(d))
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataDirError(f"{d}: cannot create the directory: {exc.strerror or exc}") from None


def _refuse_non_directory(path: Path, label: str) -> None:
    """A directory, or a path whose nearest existing ancestor is one (it can be created)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path else f" {probe}"
        raise DataDirError(f"{label}:{where} is not a directory")
