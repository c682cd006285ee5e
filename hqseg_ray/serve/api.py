"""``HQSegAPI``: the FastAPI ingress (``/v1``, OpenAPI at ``/docs`` and ``/openapi.json``).

The ingress owns the client state (image embeddings, video sessions), bounded in bytes, count and
idle time; the engine replicas behind it are stateless. Run ONE ingress replica: image and session
ids live in its memory (a second replica would not know them).
"""

# no `from __future__ import annotations`: FastAPI must resolve the route annotations at runtime

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from typing import Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from hqseg_ray.config import ServeConfig, TrackingConfig
from hqseg_ray.serve import inputs
from hqseg_ray.serve.cache import BoundedCache
from hqseg_ray.serve.errors import ClientError, NotFound, status_of
from hqseg_ray.serve.security import Guard, configure as configure_security
from hqseg_ray.serve.schemas import (ImageIn, ImageOut, OneShotRequest, SegmentOut, SegmentRequest, VideoIn,
                                     VideoPromptsIn, to_prompts)
from hqseg_ray.serve.sessions import SessionStore
from hqseg_ray.serve.ui import ReviewPage
from hqseg_ray.serve.ui import router as ui_router
from hqseg_ray.serve.uris import read_uri

logger = logging.getLogger(__name__)
MASK_IDS_PER_IMAGE = 16

app = FastAPI(title="hqseg-ray", version="1",
              description="SAM-HQ segmentation: cached-image clicks, one-shot segmentation and video "
              "sessions. Masks are COCO RLE; coordinates are pixels of the original image.")


# CORS, API keys and per-route body caps, before anything reads the body (see security.py; the
# replica installs its settings in HQSegAPI.__init__)
app.add_middleware(Guard)
app.include_router(ui_router)  # the review page, /ui/ (its routes are methods of ReviewPage, below)


# Serve pickles `app` (and these functions with it) when the class is decorated, so module globals
# seen by the middleware are not the ones the class sees: shared state goes through `app.state`.
_METRICS: dict = {}  # created on first use inside the replica (metrics need a running Ray worker)


def _metric(name: str):
    if not _METRICS:
        from ray.serve import metrics

        _METRICS["requests"] = metrics.Counter(
            "hqseg_requests", description="HTTP requests by route and status.", tag_keys=("route", "status"))
        _METRICS["latency"] = metrics.Histogram(
            "hqseg_request_seconds", description="HTTP request latency by route.",
            boundaries=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30], tag_keys=("route",))
        _METRICS["cache"] = metrics.Counter(
            "hqseg_image_cache_lookups", description="Image cache lookups.", tag_keys=("result",))
    return _METRICS[name]


@app.middleware("http")
async def _count_requests(request: Request, call_next):
    t0 = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        _metric("requests").inc(tags={"route": route, "status": str(status)})
        state = request.app.state
        if not hasattr(state, "request_counts"):
            state.request_counts = {}  # for GET /v1/stats
        counts = state.request_counts
        key = f"{request.method} {route} {status}"
        counts[key] = counts.get(key, 0) + 1
        _metric("latency").observe(time.perf_counter() - t0, tags={"route": route})


@app.exception_handler(ValueError)
async def _client_error(request: Request, exc: ValueError) -> JSONResponse:
    """Input errors (ClientError, also raised inside an engine replica) -> their 4xx; any other
    ValueError is a bug of ours: 500, logged with its traceback, no internals in the answer."""
    status = status_of(exc)
    if status >= 500 and not isinstance(getattr(exc, "cause", None) or exc, ClientError):
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error (logged)"}, status_code=500)
    cause = getattr(exc, "cause", None) or exc  # unwrap errors raised inside an engine replica
    return JSONResponse({"detail": str(cause)}, status_code=status)


async def probe_engine(engine, timeout_s: float) -> tuple[int, dict]:
    """(status, body) of ``GET /healthz``: one call to an engine replica every time (nothing
    cached), 503 when none answers within ``timeout_s``."""
    async def call():
        return await engine.info.remote()

    try:
        info = await asyncio.wait_for(call(), timeout=timeout_s)
    except Exception as exc:  # dead, restarting or not loaded yet: load balancers must wait
        detail = "no engine replica answered within %gs" % timeout_s if isinstance(exc, asyncio.TimeoutError) else str(exc)
        return 503, {"status": "unavailable", "detail": detail[:500]}
    return 200, {"status": "ok", "model": info["label"]}


_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}, "uri": {"type": "string"}}}},
    "application/json": {"schema": ImageIn.model_json_schema()},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


def _json_body(model) -> dict:
    """OpenAPI request body of a route that validates ``model`` itself (off the event loop)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _video_body(image_body: dict) -> dict:
    content = image_body["requestBody"]["content"]
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "video": {"type": "string", "format": "binary"}, "uri": {"type": "string"}}}},
        "application/json": {"schema": VideoIn.model_json_schema()},
        "video/*": content["image/*"]}}}


class ImageEntry:
    """A cached image: its embeddings (in Ray's object store, put once: a click sends only the
    reference) and the low-res logits of its latest masks."""

    def __init__(self, embeddings, height: int, width: int) -> None:
        import ray

        self.embeddings_nbytes = int(embeddings.nbytes)
        self.embeddings = ray.put(embeddings)
        self.height, self.width = height, width
        self.logits: OrderedDict = OrderedDict()

    @property
    def nbytes(self) -> int:
        return self.embeddings_nbytes + sum(v.nbytes for v in self.logits.values())

    def remember(self, logits: np.ndarray) -> list[str]:
        ids = []
        for row in logits:
            mask_id = "m_" + secrets.token_hex(6)
            self.logits[mask_id] = row
            ids.append(mask_id)
        while len(self.logits) > MASK_IDS_PER_IMAGE:
            self.logits.popitem(last=False)
        return ids


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


@serve.deployment(name="HQSegAPI", max_ongoing_requests=64)
@serve.ingress(app)
class HQSegAPI(ReviewPage):
    def __init__(self, engine, serve_config: dict, tracking_config: Optional[dict] = None) -> None:
        self.engine = engine
        self.cfg = ServeConfig.model_validate(serve_config or {})
        configure_security(self.cfg)  # raises (no start) when a key source yields no key
        self.images: BoundedCache[ImageEntry] = BoundedCache(self.cfg.cache_max_bytes, self.cfg.cache_ttl_s)
        self.tracking = TrackingConfig.model_validate(tracking_config or {})
        self._info: Optional[dict] = None
        self._sessions: Optional[SessionStore] = None

    async def engine_info(self) -> dict:
        if self._info is None:
            self._info = await self.engine.info.remote()
        return self._info

    # -- health and stats -------------------------------------------------------------------
    @app.get("/healthz", summary="200 when an engine replica answers now (503 otherwise); needs no API key")
    async def healthz(self) -> JSONResponse:
        status, body = await probe_engine(self.engine, self.cfg.health_probe_timeout_s)
        return JSONResponse(body, status_code=status)

    @app.get("/v1/stats", summary="Counters: cache, batches (decoder batch sizes), sessions")
    async def stats(self, request: Request) -> dict:
        engine_stats = await self.engine.stats.remote()
        return {"requests": dict(getattr(request.app.state, "request_counts", {})),
                "images": {"count": len(self.images), "bytes": self.images.nbytes,
                           "max_bytes": self.images.max_bytes, **self.images.stats},
                "sessions": self._sessions.stats() if self._sessions is not None else {"count": 0},
                "engine": engine_stats}

    # -- images -------------------------------------------------------------------------------
    async def _upload(self, request: Request, field: str, model) -> tuple[bytes, str]:
        """The bytes of an upload (multipart file, raw body, JSON base64 or an allowed URI) and the
        client's file name (messages only). Parsed in a worker thread."""
        up = await inputs.read_upload(request, field, model)
        if up.uri is not None:
            return await self._read_uri(up.uri)
        return up.data, up.name

    async def _read_uri(self, uri: str) -> tuple[bytes, str]:
        data = await asyncio.to_thread(read_uri, uri, self.cfg)
        return data, ""

    async def _image_from_request(self, request: Request) -> np.ndarray:
        data, _ = await self._upload(request, "image", ImageIn)
        return await self._decode(data)

    async def _image_from_json(self, image: Optional[str], uri: Optional[str]) -> np.ndarray:
        if (image is None) == (uri is None):
            raise ClientError("give exactly one of 'image' (base64) or 'uri'")
        if image is not None:
            return await self._decode(inputs.decode_base64(image, "image"))
        return await self._image_from_uri(uri)

    async def _image_from_uri(self, uri: str) -> np.ndarray:
        return await self._decode((await self._read_uri(uri))[0])

    async def _decode(self, data: bytes) -> np.ndarray:
        return await asyncio.to_thread(inputs.decode_image, data, self.cfg.max_image_pixels)

    async def _add_image(self, image: np.ndarray) -> tuple[str, ImageEntry]:
        emb = await self.engine.encode.remote(image)
        entry = ImageEntry(emb, int(image.shape[0]), int(image.shape[1]))
        image_id = _new_id("img_")
        self.images.put(image_id, entry, entry.nbytes)
        return image_id, entry

    @app.post("/v1/images", response_model=ImageOut, openapi_extra=_UPLOAD_BODY,
              summary="Upload an image once: it is encoded and its embedding cached")
    async def add_image(self, request: Request) -> ImageOut:
        image = await self._image_from_request(request)
        image_id, entry = await self._add_image(image)
        return ImageOut(image_id=image_id, width=entry.width, height=entry.height)

    @app.delete("/v1/images/{image_id}", summary="Drop a cached image")
    async def delete_image(self, image_id: str) -> dict:
        if self.images.pop(image_id) is None:
            raise NotFound(f"image {image_id!r} is not cached")
        return {"deleted": image_id}

    def _entry(self, image_id: str) -> ImageEntry:
        entry = self.images.get(image_id)
        _metric("cache").inc(tags={"result": "hit" if entry is not None else "miss"})
        if entry is None:
            raise NotFound(f"image {image_id!r} is not cached: unknown, deleted, or evicted (idle for "
                           f"{self.cfg.cache_ttl_s:g} s, or pushed out by newer images past "
                           f"{self.cfg.cache_max_bytes} bytes); upload it again with POST /v1/images")
        return entry

    async def _prompts(self, height: int, width: int, req: SegmentRequest, entry: Optional[ImageEntry] = None):
        """Validate and convert a request's prompts (before any model work); every problem at once."""
        from hqseg_ray.model.engine import preprocess_shape

        info = await self.engine_info()
        input_size = preprocess_shape(height, width, info["image_size"])

        def to_low_res(mask: np.ndarray) -> np.ndarray:
            return inputs.mask_to_low_res_logits(mask, input_size, info["image_size"], tuple(info["low_res_size"]))

        def lookup(mask_id: str):
            row = entry.logits.get(mask_id) if entry is not None else None
            return None if row is None else row.astype(np.float32)

        # RLE decoding and mask resizing are CPU work: off the event loop
        return await asyncio.to_thread(to_prompts, req.prompts, (height, width), to_low_res, lookup,
                                       self.cfg.max_prompts, self.cfg.max_points)

    async def _decode_masks(self, embeddings, prompts, req: SegmentRequest):
        from hqseg_ray.serve.engine_deployment import DecodeRequest

        return await self.engine.decode.remote(DecodeRequest(embeddings, prompts, req.multimask, req.hq_token_only))

    @app.post("/v1/images/{image_id}/segment", response_model=SegmentOut, openapi_extra=_json_body(SegmentRequest),
              summary="Decoder-only segmentation of a cached image (batched across clients)")
    async def segment_image(self, image_id: str, request: Request) -> SegmentOut:
        req = await inputs.read_json(request, SegmentRequest, inputs.json_element_budget(self.cfg))
        entry = self._entry(image_id)
        prompts = await self._prompts(entry.height, entry.width, req, entry)
        result = await self._decode_masks(entry.embeddings, prompts, req)
        ids = entry.remember(result.low_res_logits)
        if image_id in self.images:  # its mask logits grew
            self.images.resize(image_id, entry.nbytes)
        return SegmentOut(image_id=image_id, width=entry.width, height=entry.height,
                          masks=[{**m, "mask_id": i} for m, i in zip(result.masks, ids)],
                          model=(await self.engine_info())["label"])

    @app.post("/v1/segment", response_model=SegmentOut, openapi_extra=_json_body(OneShotRequest),
              summary="One shot: image and prompts in one request")
    async def segment_once(self, request: Request) -> SegmentOut:
        req = await inputs.read_json(request, OneShotRequest, inputs.json_element_budget(self.cfg))
        image = await self._image_from_json(req.image, req.uri)
        height, width = int(image.shape[0]), int(image.shape[1])
        prompts = await self._prompts(height, width, req)
        result = await self._decode_masks(await self.engine.encode.remote(image), prompts, req)
        return SegmentOut(width=width, height=height, masks=result.masks, model=(await self.engine_info())["label"])

    # -- video sessions -----------------------------------------------------------------------
    async def sessions(self) -> SessionStore:
        if self._sessions is None:
            self._sessions = SessionStore(self.cfg, (await self.engine_info())["image_size"])
        return self._sessions

    @app.post("/v1/videos", openapi_extra=_video_body(_UPLOAD_BODY),
              summary="Open a video session from an upload or an allowed URI")
    async def add_video(self, request: Request) -> dict:
        data, name = await self._upload(request, "video", VideoIn)
        store = await self.sessions()
        sess = await store.create(data, name)
        return {"session_id": sess.session_id, "frames": len(sess.frame_indices), "fps": float(sess.info.fps),
                "width": int(sess.info.width), "height": int(sess.info.height)}

    @app.get("/v1/videos/{session_id}", summary="A session's size, prompts and propagation state")
    async def get_video(self, session_id: str) -> dict:
        return (await self.sessions()).get(session_id).describe()

    @app.post("/v1/videos/{session_id}/prompts", openapi_extra=_json_body(VideoPromptsIn),
              summary="Add prompts on any frame; one for an (object, frame) already prompted replaces it")
    async def add_video_prompts(self, session_id: str, request: Request) -> dict:
        body = await inputs.read_json(request, VideoPromptsIn, inputs.json_element_budget(self.cfg))
        store = await self.sessions()
        sess = store.get(session_id)
        store.add_prompts(sess, body.prompts)
        return {"session_id": session_id, "prompts": len(sess.prompts)}

    @app.post("/v1/videos/{session_id}/propagate", response_class=StreamingResponse,
              summary="Track the prompted objects through the video: NDJSON, one line per frame")
    async def propagate(self, session_id: str) -> StreamingResponse:
        store = await self.sessions()
        sess = store.get(session_id)
        stream = store.propagate(sess, self.engine, self.tracking)
        try:
            first = await stream.__anext__()  # bad state raises here, before the 200 is sent
        except StopAsyncIteration:
            first = None

        async def lines():
            if first is None:
                return
            yield json.dumps(first) + "\n"
            try:
                async for frame in stream:
                    yield json.dumps(frame) + "\n"
            except Exception as exc:  # the status is already sent: report in the stream
                logger.warning("session %s: propagation failed: %s", session_id, exc)
                yield json.dumps({"error": str(getattr(exc, "cause", None) or exc)}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/videos/{session_id}/frames/{frame}/masks", summary="One frame's masks from the last propagation")
    async def frame_masks(self, session_id: str, frame: int) -> dict:
        store = await self.sessions()
        return store.frame_masks(store.get(session_id), frame)

    @app.delete("/v1/videos/{session_id}", summary="Close a session and free its memory")
    async def delete_video(self, session_id: str) -> dict:
        (await self.sessions()).delete(session_id)
        return {"deleted": session_id}
