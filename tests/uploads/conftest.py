from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path_factory) -> Path:
    """Every uploads test stores its files in its own folder, never in var/.

    A folder of its own rather than tmp_path, which some tests inspect whole.
    """
    base = tmp_path_factory.mktemp("uploads-env")
    settings.MEDIA_ROOT = base / "media"
    # Where Django's default upload handlers would spill files: watched by the size tests.
    settings.FILE_UPLOAD_TEMP_DIR = base / "tmp"
    settings.FILE_UPLOAD_TEMP_DIR.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def upload_dir(media_root) -> Path:
    return media_root / "uploads"
