"""Turning untrusted request bytes into arrays: uploads, JSON bodies, multipart, base64, images.

Everything here raises :mod:`hqseg_ray.serve.errors` exceptions with a message for the client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from dataclasses import dataclass
from email.message import Message
from typing import Any, Optional

import numpy as np

from hqseg_ray.serve.errors import ClientError, PayloadTooLarge


# --------------------------------------------------------------------------------------------
# Request bodies: parsed and validated in a worker thread, never on the event loop (the body
# size itself is capped per route before it is read: ``security.Guard``)
# --------------------------------------------------------------------------------------------

MAX_PARTS = 16


@dataclass
class Upload:
    """What an upload request carries: the bytes, or a URI to read (exactly one)."""

    data: Optional[bytes] = None
    uri: Optional[str] = None
    name: str = ""  # the client's file name (messages only; never used to open anything)


async def read_upload(request: Any, field: str, model: Any) -> Upload:
    """The upload of ``request``: a multipart file (``field``) or ``uri`` field, JSON
    (``model``: base64 ``field`` or ``uri``), or the raw bytes (``{field}/...`` or octet-stream)."""
    ctype = request.headers.get("content-type", "")
    lowered = ctype.lower()
    body = await request.body()
    if lowered.startswith("multipart/form-data"):
        fields = await asyncio.to_thread(parse_multipart, body, ctype)
        if field in fields:
            return Upload(data=fields[field][1], name=fields[field][0] or "")
        if "uri" in fields:
            return Upload(uri=fields["uri"][1].decode("utf-8", "replace").strip())
        raise ClientError(f"multipart body needs an {field!r} file or a 'uri' field; got {sorted(fields)}")
    if lowered.startswith("application/json"):
        return await asyncio.to_thread(_upload_from_json, body, field, model)
    if lowered.startswith((f"{field}/", "application/octet-stream")):
        return Upload(data=body)
    raise ClientError(f"unsupported Content-Type {ctype[:100]!r}: send multipart/form-data, application/json "
                      f"or the {field} bytes ({field}/...)")


def _upload_from_json(body: bytes, field: str, model: Any) -> Upload:
    try:
        payload = model.model_validate_json(body)
    except ValueError as exc:
        raise ClientError(f"invalid JSON body: {exc}") from None
    data, uri = getattr(payload, field), payload.uri
    if (data is None) == (uri is None):
        raise ClientError(f"give exactly one of {field!r} (base64) or 'uri'")
    return Upload(uri=uri) if uri is not None else Upload(data=decode_base64(data, field))


def json_element_budget(cfg: Any) -> int:
    """Most JSON list elements (``[`` and ``,``) a prompt body may hold: every point, label and box
    of ``max_prompts`` x ``max_points`` plus 100k for list-form RLE counts of ``mask_input``.
    Counted on the raw bytes (base64 holds neither character) before anything is parsed."""
    return int(cfg.max_prompts) * (4 * int(cfg.max_points) + 16) + 100_000


async def read_json(request: Any, model: Any, max_elements: Optional[int] = None) -> Any:
    """The body of ``request`` validated as ``model`` in a worker thread; 422 (FastAPI's
    ``RequestValidationError``) when it is not valid JSON for the model, 413 when it holds more
    than ``max_elements`` list elements (see :func:`json_element_budget`)."""
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    body = await request.body()

    def validate():
        if max_elements is not None:
            n = body.count(b",") + body.count(b"[")
            if n > max_elements:
                raise PayloadTooLarge(f"the JSON body holds about {n} list elements; prompts within "
                                      f"serve.max_prompts and serve.max_points hold at most {max_elements}")
        try:
            return model.model_validate_json(body), None
        except ValidationError as exc:
            return None, exc.errors(include_url=False, include_context=False, include_input=False)

    value, errors = await asyncio.to_thread(validate)
    if errors is not None:
        raise RequestValidationError([{**e, "loc": ("body",) + tuple(e.get("loc", ()))} for e in errors])
    return value


def _params(header: str) -> dict[str, str]:
    msg = Message()
    msg["content-type"] = header
    return {str(k).lower(): str(v) for k, v in msg.get_params(failobj=[], unquote=True)[1:]}


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[Optional[str], bytes]]:
    """``multipart/form-data`` body -> {field name: (filename or None, bytes)}.

    A boundary scan (``bytes.find``): linear in the body size, whatever the body holds (the
    stdlib email parser took ~20 s on 16 MB of newlines). At most ``MAX_PARTS`` parts.
    """
    boundary = _params(content_type).get("boundary", "")
    if not boundary:
        raise ClientError("multipart/form-data without a boundary parameter")
    if len(boundary) > 200:
        raise ClientError("multipart boundary is longer than 200 characters")
    delim = b"--" + boundary.encode("latin-1", "replace")
    pos = body.find(delim)
    if pos < 0:
        raise ClientError("malformed multipart/form-data body: no boundary line")
    fields: dict[str, tuple[Optional[str], bytes]] = {}
    while True:
        pos += len(delim)
        if body.startswith(b"--", pos):
            return fields
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
        else:
            raise ClientError("malformed multipart/form-data body: no line break after a boundary")
        end_headers = body.find(b"\r\n\r\n", pos)
        if end_headers < 0 or end_headers - pos > 16384:
            raise ClientError("malformed multipart/form-data body: a part's headers do not end")
        headers = body[pos:end_headers].decode("utf-8", "replace")
        start = end_headers + 4
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise ClientError("malformed multipart/form-data body: a part has no closing boundary")
        disposition = ""
        for line in headers.split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value.strip()
        params = _params("form-data; " + disposition.partition(";")[2]) if disposition else {}
        if params.get("name"):
            if len(fields) >= MAX_PARTS:
                raise ClientError(f"multipart body has more than {MAX_PARTS} fields")
            fields[params["name"]] = (params.get("filename"), body[start:end])
        pos = end + 2


def decode_base64(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise ClientError(f"{what} must be a non-empty base64 string")
    if text.startswith("data:") and "," in text:  # data URL
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ClientError(f"{what} is not valid base64 ({exc})") from exc


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def decode_image(data: bytes, max_pixels: int, what: str = "image") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, WebP, BMP, TIFF, ...) -> uint8 RGB ``[H, W, 3]``.

    The size is read from the header and checked against ``max_pixels`` *before* decoding, so a
    small file that would decompress to gigabytes is refused (413) without being decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ClientError(f"{what} is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise PayloadTooLarge(f"{what} is {w}x{h} = {w * h} pixels, over the limit of "
                                      f"{max_pixels} (serve.max_image_pixels)")
            if w < 1 or h < 1:
                raise ClientError(f"{what} has no pixels ({w}x{h})")
            im.draft("RGB", (w, h))
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{what}: {exc}") from exc
    except UnidentifiedImageError:
        raise ClientError(f"{what} is not an image PIL can read (send PNG, JPEG, WebP, BMP or TIFF)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ClientError):
            raise
        raise ClientError(f"{what} is corrupt or truncated ({exc})") from exc
    return np.ascontiguousarray(arr)


def mask_to_low_res_logits(mask: np.ndarray, input_size: tuple[int, int], image_size: int,
                           low_res_size: tuple[int, int], magnitude: float = 8.0) -> np.ndarray:
    """A binary mask at original-frame size -> ``[h, w]`` float32 low-res mask logits.

    The inverse of ``SegEngine.postprocess``: resize to the model's input size, pad to the square
    input, downsample to the low-res size; inside gets ``+magnitude``, outside ``-magnitude``.
    """
    import torch
    import torch.nn.functional as F

    ih, iw = input_size
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(m, (ih, iw), mode="bilinear", align_corners=False)
    m = F.pad(m, (0, image_size - iw, 0, image_size - ih))
    m = F.interpolate(m, tuple(low_res_size), mode="area")[0, 0]
    return ((m > 0.5).float() * 2 - 1).mul(magnitude).numpy().astype(np.float32)
