"""The review page: ``GET /ui/`` serves plain HTML + JS + CSS from ``hqseg_ray/serve/static/``
(package data; no build step, no CDN, same origin as the API).

The page drives the existing API (``/v1/images``, ``/v1/videos``...) for segmentation; the routes
here only add what the API does not have:

* ``GET /ui/api/config`` -- the configured review outputs (by position) and the bounds;
* ``GET /ui/api/videos/{session_id}/frames/{frame}`` -- a session frame as PNG (model input size);
* ``GET /ui/api/outputs/{i}/videos`` -- the status table of review output ``i``;
* ``GET /ui/api/outputs/{i}/videos/{video_id}/frames/{frame}/masks`` -- one frame's masks;
* ``GET /ui/api/outputs/{i}/videos/{video_id}/queue`` -- the video's review queue;
* ``GET|POST /ui/api/outputs/{i}/videos/{video_id}/corrections`` -- read / append corrections
  (``OUT/corrections.jsonl``, see ``hqseg_ray.corrections``).

:class:`ReviewPage` is a mixin of the ingress class (``HQSegAPI``): Serve binds its routes to the
replica like the ingress's own, so they see the same config and session store.
"""

# no `from __future__ import annotations`: FastAPI must resolve the route annotations at runtime

import asyncio
import io
import os
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hqseg_ray.prompts import PromptSpec
from hqseg_ray.serve import review
from hqseg_ray.serve.errors import ClientError, NotFound, PayloadTooLarge
from hqseg_ray.serve.schemas import check_prompt_bounds

router = APIRouter(prefix="/ui", tags=["review page"])
_JS = "text/javascript; charset=utf-8"
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": _JS, "review.js": _JS, "rle.js": _JS,
          "app.css": "text/css; charset=utf-8"}


def static_file(name: str) -> bytes:
    """A file of the page (only the names in :data:`STATIC`: no path ever reaches the filesystem)."""
    if name not in STATIC:
        raise NotFound(f"no page asset {name!r}")
    return resources.files("hqseg_ray.serve").joinpath("static", name).read_bytes()


class CorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[PromptSpec] = Field(..., min_length=1, description="prompts on the video's original "
                                      "frames, each with object_id; one for an (object, frame) replaces it")


def png(frame) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class ReviewPage:
    """Routes of the review page (mixed into ``HQSegAPI``: uses ``self.cfg`` and ``self.sessions()``)."""

    @router.get("", include_in_schema=False)
    async def ui_redirect(self) -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)  # relative: works under any route prefix

    @router.get("/", response_class=HTMLResponse, summary="The review page")
    async def ui_index(self) -> HTMLResponse:
        return HTMLResponse(static_file("index.html"), headers={"Cache-Control": "no-cache"})

    @router.get("/static/{name}", summary="The page's script and style sheet")
    async def ui_static(self, name: str) -> Response:
        return Response(static_file(name), media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @router.get("/api/config", summary="Review outputs (by position) and the bounds the page respects")
    async def ui_config(self) -> dict:
        info = await self.engine_info()
        return {"model": info["label"], "review_outputs": [os.path.basename(os.path.normpath(p)) or p
                                                           for p in self.cfg.review_outputs],
                "max_upload_bytes": self.cfg.max_upload_bytes, "max_prompts": self.cfg.max_prompts,
                "max_points": self.cfg.max_points, "max_video_frames": self.cfg.max_video_frames}

    @router.get("/api/videos/{session_id}/frames/{frame}", summary="A video session's frame as PNG",
                response_class=Response)
    async def ui_session_frame(self, session_id: str, frame: int) -> Response:
        sess = (await self.sessions()).get(session_id)
        pos = {int(i): p for p, i in enumerate(sess.frame_indices)}.get(frame)
        if pos is None:
            raise NotFound(f"frame {frame} is not in session {session_id!r} ({len(sess.frame_indices)} frames)")
        data = await asyncio.to_thread(png, sess.frames[pos])
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    # -- bulk outputs ---------------------------------------------------------------------------
    def _output(self, index: int) -> str:
        return review.output_dir(self.cfg.review_outputs, index)

    @router.get("/api/outputs/{index}/videos", summary="The videos of a review output, worst first")
    async def ui_output_videos(self, index: int) -> dict:
        return {"videos": await asyncio.to_thread(review.list_videos, self._output(index))}

    @router.get("/api/outputs/{index}/videos/{video_id}/frames/{frame}/masks", summary="One frame's masks")
    async def ui_output_masks(self, index: int, video_id: str, frame: int) -> dict:
        if frame < 0:
            raise ClientError(f"frame {frame} is negative")
        return await asyncio.to_thread(review.frame_masks, self._output(index), video_id, frame)

    @router.get("/api/outputs/{index}/videos/{video_id}/queue", summary="What to check first in this video")
    async def ui_output_queue(self, index: int, video_id: str) -> dict:
        return await asyncio.to_thread(review.review_queue, self._output(index), video_id)

    @router.get("/api/outputs/{index}/videos/{video_id}/corrections", summary="Corrections saved so far")
    async def ui_get_corrections(self, index: int, video_id: str) -> dict:
        out = self._output(index)
        review.masks_path(out, video_id)
        return {"video_id": video_id, "prompts": await asyncio.to_thread(review.saved_corrections, out, video_id)}

    @router.post("/api/outputs/{index}/videos/{video_id}/corrections",
                 summary="Append corrections (prompts) that the next `hqseg label --corrections` run uses")
    async def ui_save_corrections(self, index: int, video_id: str, body: CorrectionIn) -> dict:
        from hqseg_ray.corrections import CORRECTIONS_FILE, CorrectionRow, append_correction

        out = self._output(index)
        review.masks_path(out, video_id)  # only videos of this output
        frames = await asyncio.to_thread(review.frame_count, out, video_id)
        late = [i for i, p in enumerate(body.prompts) if frames is not None and not 0 <= p.frame < frames]
        if late:
            raise ClientError(f"prompts {late}: frame outside video {video_id!r} ({frames} frames)")
        check_prompt_bounds(body.prompts, self.cfg.max_prompts, self.cfg.max_points)
        for i, p in enumerate(body.prompts):
            if p.mask is not None:
                raise ClientError(f"prompt {i}: mask prompts are not taken as corrections; use points or a box")
        try:
            row = CorrectionRow(video_id=video_id, prompts=body.prompts, source="review-page")
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        path = os.path.join(out, CORRECTIONS_FILE)
        try:
            size = await asyncio.to_thread(append_correction, path, row)
        except OverflowError as exc:
            raise PayloadTooLarge(str(exc)) from None
        return {"video_id": video_id, "saved": len(body.prompts), "file": CORRECTIONS_FILE, "bytes": size,
                "prompts": await asyncio.to_thread(review.saved_corrections, out, video_id)}

