"""One propagation step (``hqseg_ray.track.step``): the identity guard between objects, the
velocity and whole-object box a hidden object is searched with, and the re-acquisition candidates."""

from types import SimpleNamespace

import numpy as np

from hqseg_ray.config import TrackerConfig
from hqseg_ray.track import ObjectState
from hqseg_ray.track.motion import LowResGeometry, Motion
from hqseg_ray.track.step import (choose_candidates, edge_boxes, edge_centres, exclusive, occluded_state, pin_to_edges,
                                  propagation_prompt, reacquire_prompts, touching, visible_state)


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


# -- velocity, whole-object box, re-acquisition candidates ----------------------------------------

def _walk(cfg, flows, h=60, w=160, r=8, speed=4.0):
    """A disc moving ``speed`` px/frame to the right, seeded on frame 0, then propagated with the
    given per-frame flow estimates (dx or None for 'no flow points')."""
    st = None
    for t, dx in enumerate([None] + list(flows)):
        m = _disc(h, w, 20 + speed * t, 30, r)
        motion = None if dx is None else Motion(dx, 0.0, points=10)
        st = visible_state(st, st or _state(m, 0, [int(m.sum())]), t, m, np.zeros((8, 8), np.float32), 0.9,
                           motion, t == 0, cfg)
    return st


def test_velocity_is_the_median_of_recent_motions():
    cfg = TrackerConfig()
    st = _walk(cfg, [4.0, 4.1, 3.9, 4.0])
    assert abs(st.velocity[0] - 4.0) < 0.11 and abs(st.velocity[1]) < 1e-9
    # one flow estimate on the wrong points (an occluder's, standing still) does not stop the object
    st = _walk(cfg, [4.0, 4.1, 3.9, 4.0, 0.0])
    assert abs(st.velocity[0] - 4.0) < 0.11
    # no flow points: the box centre's step
    st = _walk(cfg, [None, None, None])
    assert abs(st.velocity[0] - 4.0) < 1e-6


def test_whole_object_box_is_kept_while_the_object_is_cut_off():
    cfg = TrackerConfig()
    st = _walk(cfg, [4.0, 4.0, 4.0])
    full = st.full_box.copy()
    assert st.since_full == 0
    sliver = _disc(60, 160, 36, 30, 8) & (np.mgrid[:60, :160][1] < 33)  # cut by an occluder on its right
    cut = visible_state(st, st, 4, sliver, st.logits, 0.9, Motion(4.0, 0.0, points=10), False, cfg)
    assert np.array_equal(cut.full_box, full) and cut.since_full == 1
    assert np.array_equal(cut.velocity, st.velocity)  # a cut object's box step says nothing of its motion
    hidden = occluded_state(occluded_state(cut, 5), 6)
    assert hidden.lost == 2 and hidden.since_full == 3 and np.array_equal(hidden.full_box, full)
    again = ObjectState.from_dict(hidden.to_dict(0))  # the relay carries all of it
    assert np.array_equal(again.full_box, full) and again.since_full == 3 and len(again.steps) == len(hidden.steps)


def test_contact_with_another_object_freezes_the_velocity_and_the_whole_box():
    """An object touching another (about to pass behind it) mixes the other's pixels into its box and
    flow: those frames do not update its motion or its whole-object box."""
    cfg = TrackerConfig()
    st = _walk(cfg, [4.0, 4.0, 4.0])
    m = _disc(60, 160, 36, 30, 8)
    touched = visible_state(st, st, 4, m, st.logits, 0.9, Motion(0.5, 0.0, points=10), False, cfg, contact=True)
    assert np.array_equal(touched.velocity, st.velocity) and np.array_equal(touched.full_box, st.full_box)
    assert touched.since_full == 1
    free = visible_state(st, st, 4, m, st.logits, 0.9, Motion(4.0, 0.0, points=10), False, cfg)
    assert free.since_full == 0 and not np.array_equal(free.full_box, st.full_box)


def test_touching_masks():
    a, b, c = _disc(60, 100, 20, 30, 8), _disc(60, 100, 38, 30, 9), _disc(60, 100, 80, 30, 8)
    assert touching([a, b, c], [True, True, True]) == [True, True, False]   # 1 px apart
    assert touching([a, b, c], [True, False, True]) == [False, False, False]  # b is not kept
    assert touching([a, b, c], [True, True, True], gap=0) == [False, False, False]


def test_reacquisition_candidates_are_object_sized_along_the_path():
    cfg = TrackerConfig()
    st = _walk(cfg, [4.0, 4.0, 4.0])
    sliver = _disc(60, 160, 36, 30, 8) & (np.mgrid[:60, :160][1] < 33)
    st = visible_state(st, st, 4, sliver, st.logits, 0.9, Motion(4.0, 0.0, points=10), False, cfg)
    for t in range(5, 15):
        st = occluded_state(st, t)
    geo = LowResGeometry((60, 160), 64, (16, 16))
    cands, pred = reacquire_prompts(st, 15, cfg, geo)
    fw = st.full_box[2] - st.full_box[0]
    grow = cfg.box_margin + cfg.reacquire_margin * (1 + st.lost / 16)
    widths = {round(float(p.box[2] - p.box[0]), 3) for p in cands if 0 < p.box[0] and p.box[2] < 160}
    assert widths == {round(fw * (1 + 2 * grow), 3)}  # the whole object's size, not the sliver's
    centres = np.array([[(p.box[0] + p.box[2]) / 2, (p.box[1] + p.box[3]) / 2] for p in cands])
    expected = (st.full_box[:2] + st.full_box[2:]) / 2 + st.velocity * st.since_full
    assert np.allclose(centres[0], expected)                       # first: where it should be now
    assert np.allclose((pred[:2] + pred[2:]) / 2, expected)
    assert (centres[:, 1] != expected[1]).sum() >= 4                # and beside the path
    assert all(p.mask_input is not None and p.mask_input.shape == (16, 16) for p in cands)


def test_reacquisition_picks_the_best_appearance_then_the_best_score():
    h, w = 20, 20
    masks = [np.ones((h, w), bool)] * 3
    jobs = [SimpleNamespace(candidates=[0, 1, 2])]
    owner = [0, 0, 0]
    scores = [0.9, 0.6, 0.7]
    assert choose_candidates(jobs, owner, masks, scores, [True] * 3, 0.5) == [0]
    assert choose_candidates(jobs, owner, masks, scores, [True] * 3, 0.5, rank=[0.2, 0.9, 0.9]) == [2]
    assert choose_candidates(jobs, owner, masks, scores, [True, False, True], 0.5, rank=[0.2, 0.9, 0.8]) == [2]


def test_an_object_that_left_through_an_edge_is_searched_for_along_it():
    # left through the left edge around y = 50 of a 200 x 100 frame; candidate boxes 20 x 10
    cs = np.array(edge_centres(np.array([0.0, 45, 6, 55]), 20, 10, (100, 200), lost=6))
    assert np.allclose(cs[:, 0], 10)                        # inside the frame, against the edge
    assert np.isclose(cs[0, 1], 50) and cs[:, 1].min() < 40 and cs[:, 1].max() > 60
    assert cs[:, 1].min() >= 5 and cs[:, 1].max() <= 95     # never past a corner
    # the search widens the longer it has been gone
    later = np.array(edge_centres(np.array([0.0, 45, 6, 55]), 20, 10, (100, 200), lost=24))
    assert later[1, 1] - 50 > cs[1, 1] - 50 > 0
    # a corner exit searches both edges; an object inside the frame none
    assert len(edge_centres(np.array([0.0, 0, 6, 8]), 20, 10, (100, 200), 6)) == 18
    assert edge_centres(np.array([50.0, 40, 60, 50]), 20, 10, (100, 200), 6) == []


def test_an_object_coming_back_through_an_edge_is_also_searched_for_as_a_strip():
    """Besides whole-object boxes against the edge, shallow boxes (the first 40 % of the object in
    view), whose mask input is the object moved mostly out of the frame."""
    box = np.array([0.0, 45, 6, 55])
    cands = edge_boxes(box, 20, 10, (100, 200), lost=6)
    assert len(cands) == 2 * len(edge_centres(box, 20, 10, (100, 200), 6))
    whole, strip = cands[0], cands[1]
    assert np.allclose(whole[1], [0, 45, 20, 55]) and np.allclose(whole[0], [10, 50])
    assert np.allclose(strip[1], [0, 45, 8, 55])        # against the left edge, 40 % deep
    assert np.allclose(strip[0], [-2, 50])              # the whole object's centre: mostly outside
    right = edge_boxes(np.array([194.0, 45, 200, 55]), 20, 10, (100, 200), lost=6)[1]
    assert np.allclose(right[1], [192, 45, 200, 55]) and np.allclose(right[0], [202, 50])
    top = edge_boxes(np.array([90.0, 0, 110, 4]), 20, 10, (100, 200), lost=6)[1]
    assert np.allclose(top[1], [90, 0, 110, 4]) and np.allclose(top[0], [100, -1])
    # and reacquire_prompts offers them once the object has been gone two frames
    cfg = TrackerConfig()
    m = np.zeros((100, 200), bool)
    m[45:55, 0:6] = True
    st = occluded_state(occluded_state(_state(m, 0, [60]), 1), 2)
    geo = LowResGeometry((100, 200), 64, (16, 16))
    boxes = [p.box for p in reacquire_prompts(st, 3, cfg, geo)[0]]
    widths = {round(float(b[2] - b[0]), 2) for b in boxes if b[0] == 0}
    assert len(widths) >= 2                             # whole-object and strip boxes on the left edge


def test_a_box_on_the_frame_edge_stays_on_it_when_moved():
    """An object cut by the frame edge goes on beyond it: moving its box inwards must not cut off
    the part still coming into view."""
    size = (100, 200)
    assert np.allclose(pin_to_edges(np.array([8.0, 40, 28, 60]), np.array([0.0, 40, 20, 60]), size), [0, 40, 28, 60])
    assert np.allclose(pin_to_edges(np.array([170.0, 2, 192, 12]), np.array([178.0, 0, 200, 10]), size),
                       [170, 0, 200, 12])
    inside = np.array([50.0, 40, 70, 60])
    assert np.allclose(pin_to_edges(inside + 5, inside, size), inside + 5)  # nothing to pin
    # in the propagation prompt: entering from the left at 6 px per frame
    m = np.zeros(size, bool)
    m[40:60, 0:12] = True
    st = _state(m, 0, [240])
    geo = LowResGeometry(size, 64, (16, 16))
    prompt, pred = propagation_prompt(st, Motion(6.0, 0.0, points=10), 1, TrackerConfig(), geo)
    assert pred[0] == 0 and pred[2] == 18 and prompt.box[0] == 0


def test_areas_cut_by_the_frame_edge_do_not_become_the_reference():
    """Leaving through the edge: the area history keeps the whole object's areas (the sliver it
    becomes is not its size, so coming back whole is not taken for a bleed). Seeded while cut: the
    cut areas are the history until the first whole view replaces them."""
    cfg = TrackerConfig()
    st = _walk(cfg, [4.0, 4.0, 4.0])
    whole = list(st.areas)
    sliver = np.zeros((60, 160), bool)
    sliver[25:35, 0:3] = True
    cut = visible_state(st, st, 4, sliver, st.logits, 0.9, Motion(-4.0, 0.0, points=10), False, cfg, at_border=True)
    assert cut.areas == whole and not cut.areas_cut
    again = ObjectState.from_dict(cut.to_dict(0))
    assert again.areas == whole and again.areas_cut is False
    seeded = visible_state(None, _state(sliver, 0, []), 0, sliver, st.logits, 0.9, None, True, cfg, at_border=True)
    assert seeded.areas == [30] and seeded.areas_cut
    more = sliver.copy()
    more[25:35, 0:8] = True
    grown = visible_state(seeded, seeded, 1, more, st.logits, 0.9, None, False, cfg, at_border=True)
    assert grown.areas == [30, 80] and grown.areas_cut
    inside = _disc(60, 160, 30, 30, 8)
    seen = visible_state(grown, grown, 2, inside, st.logits, 0.9, None, False, cfg)
    assert seen.areas == [int(inside.sum())] and not seen.areas_cut
    assert ObjectState.from_dict(grown.to_dict(0)).areas_cut is True


def _scene_with(h, w, discs, bg=(40, 60, 160)):
    """RGB frame of colour ``bg`` with discs ``[(cx, cy, r, rgb), ...]`` painted in order."""
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = bg
    for cx, cy, r, rgb in discs:
        frame[_disc(h, w, cx, cy, r)] = rgb
    return frame


def test_appearance_peaks_find_the_object_by_its_colours_anywhere():
    from hqseg_ray.track.motion import appearance_peaks, color_hist

    red, green = (200, 30, 30), (30, 200, 60)
    seed = _scene_with(120, 160, [(30, 30, 10, red)])
    model = color_hist(seed, _disc(120, 160, 30, 30, 10))
    # now on the other side of the frame, with a green distractor of the same size
    later = _scene_with(120, 160, [(125, 90, 10, red), (60, 70, 10, green)])
    peaks = appearance_peaks(later, model, 20, 20, k=3)
    assert len(peaks) >= 1 and np.hypot(*(peaks[0] - [125, 90])) <= 3
    assert all(np.hypot(*(p - [60, 70])) > 10 for p in peaks)   # the green disc does not look like it
    # two red discs: two distinct places, best first; k caps the count
    two = _scene_with(120, 160, [(125, 90, 10, red), (40, 40, 8, red)])
    p2 = appearance_peaks(two, model, 20, 20, k=3)
    assert len(p2) == 2 and np.hypot(*(p2[0] - [125, 90])) <= 3 and np.hypot(*(p2[1] - [40, 40])) <= 4
    assert len(appearance_peaks(two, model, 20, 20, k=1)) == 1
    # gone from view: nothing; and a frame half covered by the object's colour (a wall of red, no
    # object-shaped place) gives no place inside the wall, only along its border at most
    assert appearance_peaks(_scene_with(120, 160, [(60, 70, 10, green)]), model, 20, 20, k=3) == []
    wall = _scene_with(120, 160, [])
    wall[:, 80:] = red
    assert all(p[0] < 95 for p in appearance_peaks(wall, model, 20, 20, k=3))
    # the frame as the tracker may hold it, resized (here to half size): centres and window sizes
    # stay in original pixels
    import cv2

    half = cv2.resize(later, (80, 60), interpolation=cv2.INTER_AREA)
    ph = appearance_peaks(half, model, 20, 20, k=3, size=(120, 160))
    assert len(ph) >= 1 and np.hypot(*(ph[0] - [125, 90])) <= 4


def test_a_lost_object_is_searched_for_where_its_colours_are():
    """Beside the candidates along its path, re-acquisition tries object-sized boxes where the
    frame looks like the object (an object lost in mid-frame, or back away from where it left),
    with the last logits moved there."""
    from hqseg_ray.track.motion import color_hist

    h, w = 120, 160
    red = (200, 30, 30)
    m = _disc(h, w, 30, 30, 10)
    st = _state(m, 0, [int(m.sum())])
    st = occluded_state(occluded_state(st, 1), 2)
    geo = LowResGeometry((h, w), 64, (16, 16))
    logits = np.full((16, 16), -20.0, np.float32)
    logits[1:4, 1:4] = 10.0  # the object in the low-res grid (4 px cells of the 64-px input)
    from dataclasses import replace
    st = replace(st, hist=color_hist(_scene_with(h, w, [(30, 30, 10, red)]), m), logits=logits)
    frame = _scene_with(h, w, [(125, 90, 10, red)])
    cfg = TrackerConfig()
    near = [p.box for p in reacquire_prompts(st, 3, cfg, geo)[0]]
    cands = reacquire_prompts(st, 3, cfg, geo, frame)[0]
    assert len(cands) > len(near)
    hit = [p for p in cands if p.box[0] < 125 < p.box[2] and p.box[1] < 90 < p.box[3]]
    assert hit and all(abs((p.box[2] - p.box[0]) - (st.box[2] - st.box[0]) * (1 + 2 * cfg.box_margin)) < 1e-6
                       for p in hit)
    # the last logits were moved with the box: their peak is now near (125, 90) in the low-res grid
    yy, xx = np.nonzero(hit[0].mask_input > 0)
    assert abs(xx.mean() * 4 * 160 / 64 - 125) < 12 and abs(yy.mean() * 4 * 160 / 64 - 90) < 12
    off = TrackerConfig(reacquire_appearance_candidates=0)
    assert len(reacquire_prompts(st, 3, off, geo, frame)[0]) == len(near)


def test_the_colour_model_follows_slow_changes_but_not_a_drifting_mask():
    from hqseg_ray.track.motion import color_hist, hist_similarity, update_colour_model

    h, w = 40, 40
    disc = _disc(h, w, 20, 20, 10)
    red = color_hist(_scene_with(h, w, [(20, 20, 10, (200, 30, 30))]), disc)
    assert update_colour_model(None, red, 0.8) is red                      # a seed sets it
    darker = red.copy()  # 15 % of its red moved one bin down: lighting
    darker[6] -= 0.15
    darker[5] += 0.15
    assert hist_similarity(darker, red) >= 0.8
    moved = update_colour_model(red, darker, 0.8)                          # lighting: taken in, 10 %
    assert np.allclose(moved, 0.9 * red + 0.1 * darker) and np.isclose(moved.sum(), 3.0)
    # half the mask on the blue background: does not match, the model stays
    half = color_hist(_scene_with(h, w, [(20, 20, 10, (200, 30, 30))]), _disc(h, w, 30, 20, 10))
    assert hist_similarity(half, red) < 0.8
    assert update_colour_model(red, half, 0.8) is red
    assert not np.allclose(update_colour_model(red, half, 0.0), red)       # 0: every mask updates it
