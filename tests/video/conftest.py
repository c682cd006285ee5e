"""Session-cached test videos (small: 64x48 unless a test needs a particular size)."""

from __future__ import annotations

import pytest

from .helpers import write_video


@pytest.fixture(scope="session")
def make_video(tmp_path_factory):
    """``make_video(name, **write_video_kwargs) -> Path``, written once per session."""
    root = tmp_path_factory.mktemp("videos")
    cache: dict = {}

    def make(name: str, **kw):
        key = (name, repr(sorted(kw.items())))
        if key not in cache:
            cache[key] = write_video(root / name, **kw)
        return cache[key]

    return make
