"""Shared fixtures. Ray is never started here; Ray tests start (and stop) their own cluster."""

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")
warnings.filterwarnings("ignore", module="timm")

DAVIS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "davis2016-sample")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def davis_dir():
    path = os.path.abspath(os.environ.get("HQSEG_DAVIS_DIR", DAVIS_DIR))
    if not os.path.isdir(path):
        pytest.skip(f"DAVIS sample not found at {path} (set HQSEG_DAVIS_DIR or place ../shared/data/davis2016-sample)")
    return path
