"""The one-frame identity guard between objects (``hqseg_ray.track.step.exclusive``)."""

from types import SimpleNamespace

import numpy as np

from hqseg_ray.track import ObjectState
from hqseg_ray.track.step import exclusive


def _state(mask: np.ndarray, lost: int, area_hist: list[int]) -> ObjectState:
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    return ObjectState(1, 1, "prompt", 0, np.zeros((8, 8), np.float32), mask, box, area_hist, np.zeros(2), lost=lost)


def _disc(h, w, cx, cy, r):
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _jobs(big_prev_areas):
    h, w = 60, 100
    big = _disc(h, w, 40, 30, 20)      # the occluder, tracked and visible
    small = _disc(h, w, 66, 30, 6)     # the object coming back out from behind it
    big_job = SimpleNamespace(mode="prop", prev=_state(big, 0, big_prev_areas), motion=None)
    back_job = SimpleNamespace(mode="prop", prev=_state(small, 5, [int(small.sum())]), motion=None)
    return big, small, big_job, back_job


def test_reacquisition_inside_a_stable_track_loses():
    big, small, big_job, back_job = _jobs(None)
    bled = big | small                     # this frame's mask of the big object covers the small one...
    big_job.prev.areas = [int(bled.sum())] * 5  # ... but it always had that size: no bleed
    carve: list = []
    oks = exclusive([big_job, back_job], [bled, small], [0.9, 0.9], [True, True], 0.5, carve)
    assert oks == [True, False] and carve == []


def test_a_track_that_bled_onto_a_returning_object_gives_its_pixels_back():
    big, small, big_job, back_job = _jobs(None)
    big_job.prev.areas = [int(big.sum())] * 5  # the usual size: without the small object's pixels
    bled = big | small
    carve: list = []
    oks = exclusive([big_job, back_job], [bled, small], [0.9, 0.9], [True, True], 0.5, carve)
    assert oks == [True, True] and carve == [(0, 1)]
    # without a carve list (callers that cannot carve) the old rule holds
    assert exclusive([big_job, back_job], [bled, small], [0.9, 0.9], [True, True], 0.5) == [True, False]
