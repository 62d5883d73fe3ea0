"""Media store: clip files under a root folder, addressed by relative keys.

Keys (``clips/<clip_id>/clip.mp4``) are what records carry, so an S3-compatible store
can replace the folder without changing any event. Writers render into a temporary
folder and move it into place, so readers never see a half-written clip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from core.errors import NotFoundError


class LocalMediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def clip_prefix(clip_id: uuid.UUID) -> str:
        return f"clips/{clip_id}"

    def path(self, key: str) -> Path:
        """Absolute path of a key, refusing anything that escapes the root."""
        candidate = (self.root / key).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise NotFoundError(f"media key {key!r} is outside the media store")
        return candidate

    def key_of(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).is_file()
        except NotFoundError:
            return False

    def staging_dir(self) -> Path:
        """A fresh folder on the same file system, so the final move is a rename."""
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=staging))

    def commit_dir(self, staged: Path, prefix: str) -> Path:
        """Move a staged folder to ``prefix``; an existing complete copy wins."""
        final = self.path(prefix)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, final)
        except OSError:
            if final.is_dir():  # a redelivery rendered it already: keep the first
                shutil.rmtree(staged, ignore_errors=True)
            else:
                raise
        return final
