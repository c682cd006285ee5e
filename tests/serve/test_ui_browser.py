"""The review page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium): click on a synthetic object and read the mask the page drew back from its canvas;
propagate through a video; step through a job's review queue and save a correction.

Skipped, with the reason, only where Chromium, its driver or selenium is absent (.ci/run installs
them). Screenshots go to $HQSEG_UI_SCREENSHOTS when set (and to the test's tmp dir otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("headless Chromium is not installed here (needs Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver, as .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path):
    folder = os.environ.get("HQSEG_UI_SCREENSHOTS") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    return lambda driver, name: driver.save_screenshot(os.path.join(folder, f"{name}.png"))


def wait(driver, script: str, timeout: float = 60.0):
    """Poll ``return <script>`` until truthy; fail with the page's status line otherwise."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script("return " + script)
        if value:
            return value
        if driver.execute_script("return window.hqseg && window.hqseg.error"):
            break
        time.sleep(0.1)
    status = driver.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; page status: {status!r}")


def drawn_mask(driver) -> np.ndarray:
    """The mask layer's pixels as the page drew them: ``[H, W]`` bool (alpha > 0)."""
    data = driver.execute_script("""
        const c = document.getElementById('mask-layer');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const a = new Array(c.width * c.height);
        for (let i = 0; i < a.length; i++) a[i] = px[4 * i + 3];
        return [c.height, c.width, a];""")
    h, w, alpha = data
    return np.asarray(alpha, dtype=np.uint8).reshape(h, w) > 0


def click_at(driver, x: float, y: float, shift: bool = False) -> None:
    """Click the page's canvas at pixel (x, y) of the original frame."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    el = driver.find_element(By.ID, "marks")
    dx, dy = offset(driver, el, x, y)
    chain = ActionChains(driver)
    if shift:
        chain = chain.key_down(Keys.SHIFT)
    chain = chain.move_to_element_with_offset(el, dx, dy).click()
    if shift:
        chain = chain.key_up(Keys.SHIFT)
    chain.perform()


def drag_box(driver, box) -> None:
    """Drag a box with the page's box tool, from (x1, y1) to (x2, y2) of the original frame."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "input[name=tool][value=box]").click()
    el = driver.find_element(By.ID, "marks")
    (x1, y1), (x2, y2) = [offset(driver, el, x, y) for x, y in (box[:2], box[2:])]
    ActionChains(driver).move_to_element_with_offset(el, x1, y1).click_and_hold() \
        .move_to_element_with_offset(el, (x1 + x2) // 2, (y1 + y2) // 2) \
        .move_to_element_with_offset(el, x2, y2).release().perform()
    driver.find_element(By.CSS_SELECTOR, "input[name=tool][value=click]").click()


def offset(driver, el, x: float, y: float) -> tuple[int, int]:
    """Selenium's offset from the element's centre for pixel (x, y) of the canvas."""
    w, h = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", el)
    cw, ch = driver.execute_script("return [arguments[0].width, arguments[0].height]", el)
    return int(round((x + 0.5) * w / cw - w / 2)), int(round((y + 0.5) * h / ch - h / 2))


def inside_point(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of ``mask`` farthest from its border, (x, y)."""
    import cv2

    d = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(x), int(y)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def open_page(driver, base: str) -> None:
    driver.get(base + "/ui")  # the redirect to ui/ must keep the route prefix
    wait(driver, "document.readyState === 'complete' && window.hqseg !== undefined")
    assert driver.current_url == base + "/ui/"


def test_click_on_a_synthetic_object_draws_its_mask(browser, ui_app, tmp_path, shots):
    from PIL import Image
    from selenium.webdriver.common.by import By

    from hqseg_ray.masks import rle_decode
    from hqseg_ray.synth.generate import generate_scene

    scene = generate_scene(0, size=(120, 160), n_objects=(1, 2))
    k = int(np.argmax(scene.masks.reshape(len(scene.masks), -1).sum(1)))
    truth = scene.masks[k]
    Image.fromarray(scene.image).save(tmp_path / "scene.png")

    open_page(browser, ui_app["base"])
    browser.find_element(By.ID, "image-file").send_keys(str(tmp_path / "scene.png"))
    wait(browser, "window.hqseg.imageId")
    x, y = inside_point(truth)
    click_at(browser, x, y)
    wait(browser, "window.hqseg.preview['0:1'] && window.hqseg.pending === 0")
    state = browser.execute_script("return window.hqseg")
    (px, py), = state["clicks"]["0:1"]["points"]  # original-image pixels, from the page's own mouse event
    assert abs(px - x - 0.5) <= 2 and abs(py - y - 0.5) <= 2 and state["clicks"]["0:1"]["labels"] == [1]
    mask = state["preview"]["0:1"]
    expected = rle_decode({"size": mask["size"], "counts": mask["counts"]}).astype(bool)
    drawn = drawn_mask(browser)
    shots(browser, "ui-image-click")
    assert drawn.shape == truth.shape
    assert np.array_equal(drawn, expected), "the canvas does not show the mask the server returned"
    assert iou(drawn, truth) > 0.6, f"the drawn mask misses the clicked object (IoU {iou(drawn, truth):.2f})"

    click_at(browser, 2, 2, shift=True)  # a background click: a second prompt point, label 0
    wait(browser, "window.hqseg.clicks['0:1'].points.length === 2 && window.hqseg.pending === 0")
    assert browser.execute_script("return window.hqseg.clicks['0:1'].labels") == [1, 0]


def test_video_click_propagate_and_step_frames(browser, ui_app, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    video = ui_app["video"]
    obj = 2  # the polygon, which the toy model tracks through all 8 frames of seed 8 (IoU > 0.85)
    open_page(browser, ui_app["base"])
    browser.find_element(By.ID, "tab-video").click()
    browser.find_element(By.ID, "video-file").send_keys(ui_app["video_path"])
    wait(browser, "window.hqseg.session && window.hqseg.renders > 0")
    try:
        browser.find_element(By.ID, "new-object").click()  # object 1 -> a new object 2
        assert browser.execute_script("return window.hqseg.objectId") == obj
        drag_box(browser, video.box(0, obj))
        wait(browser, f"window.hqseg.preview['0:{obj}'] && window.hqseg.pending === 0")
        box = browser.execute_script(f"return window.hqseg.clicks['0:{obj}'].box")
        assert np.abs(np.subtract(box, video.box(0, obj))).max() <= 2, box
        assert iou(drawn_mask(browser), video.mask(0, obj)) > 0.5
        browser.find_element(By.ID, "propagate").click()
        n = len(video.frames)
        wait(browser, f"Object.keys(window.hqseg.results).length === {n} && window.hqseg.pending === 0", 120)
        for _ in range(n - 1):
            browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        wait(browser, f"window.hqseg.frame === {n - 1} && window.hqseg.pending === 0")
        time.sleep(0.3)  # the last render
        shots(browser, "ui-video-last-frame")
        from hqseg_ray.masks import rle_decode

        served = browser.execute_script(f"return window.hqseg.results[{n - 1}]")
        (m,) = [o for o in served if o["object_id"] == obj]
        drawn = drawn_mask(browser)
        assert np.array_equal(drawn, rle_decode({"size": m["size"], "counts": m["counts"]}).astype(bool))
        last = video.mask(n - 1, obj)
        assert iou(drawn, last) > 0.5, "the tracked mask on the last frame misses the object"
    finally:
        sid = browser.execute_script("return window.hqseg.session && window.hqseg.session.session_id")
        if sid:
            ui_app["client"].delete(f"/v1/videos/{sid}")


def test_review_queue_correction_round_trip(browser, ui_app, shots):
    from selenium.webdriver.common.by import By

    video, out = ui_app["video"], ui_app["output"]
    obj = 1
    open_page(browser, ui_app["base"])
    browser.find_element(By.ID, "tab-review").click()
    wait(browser, "document.querySelectorAll('#review-video option').length === 1")
    browser.find_element(By.ID, "open-review").click()
    wait(browser, "window.hqseg.session && window.hqseg.queue.length === 2 && window.hqseg.pending === 0")
    try:
        from hqseg_ray.masks import rle_decode

        assert browser.execute_script("return window.hqseg.frame") == 5  # the queue's first item
        assert browser.execute_script("return window.hqseg.objectId") == 2  # ... and its object
        job = ui_app["client"].get("/ui/api/outputs/0/videos/clip/frames/5/masks").json()["objects"]
        union = np.zeros(ui_app["size"], bool)
        for o in job:
            union |= rle_decode({"size": o["size"], "counts": o["counts"]}).astype(bool)
        drawn = drawn_mask(browser)
        assert union.any() and np.array_equal(drawn, union), "the job's masks are not drawn on the queued frame"
        browser.find_element(By.ID, "queue-next").click()
        wait(browser, "window.hqseg.frame === 2 && window.hqseg.queueIndex === 1 && window.hqseg.pending === 0")
        shots(browser, "ui-review-queue")
        x, y = inside_point(video.mask(2, obj))
        click_at(browser, x, y)
        wait(browser, "window.hqseg.preview['2:1'] && window.hqseg.pending === 0")
        browser.find_element(By.ID, "save").click()
        wait(browser, "window.hqseg.saved.length === 1")
        shots(browser, "ui-review-saved")
        lines = [json.loads(s) for s in (out / "corrections.jsonl").read_text().splitlines()]
        assert lines[-1]["video_id"] == "clip"
        (saved,) = lines[-1]["prompts"]
        (px, py), = saved.pop("points")
        assert saved == {"object_id": 1, "frame": 2, "labels": [1]}
        assert abs(px - x - 0.5) <= 2 and abs(py - y - 0.5) <= 2
    finally:
        sid = browser.execute_script("return window.hqseg.session && window.hqseg.session.session_id")
        if sid:
            ui_app["client"].delete(f"/v1/videos/{sid}")
        if (out / "corrections.jsonl").exists():
            (out / "corrections.jsonl").unlink()
