"""Turning untrusted request bytes into arrays: body size limits, multipart, base64, images.

Everything here raises :mod:`hqseg_ray.serve.errors` exceptions with a message for the client.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from email import policy
from email.parser import BytesParser
from typing import Any, Optional

import numpy as np

from hqseg_ray.serve.errors import ClientError, PayloadTooLarge


# --------------------------------------------------------------------------------------------
# Request body limit (ASGI middleware: runs before FastAPI reads or parses anything)
# --------------------------------------------------------------------------------------------

class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 when a request body is larger than ``max_bytes``: checked on Content-Length before
    reading, and on the bytes actually received (chunked or lying clients)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _send_json(send, 400, "Content-Length is not an integer")
                if declared > self.max_bytes:
                    return await _send_json(send, 413, f"request body of {declared} bytes is over the "
                                            f"limit of {self.max_bytes} bytes (serve.max_upload_bytes)")
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, f"request body is over the limit of {self.max_bytes} bytes "
                                 "(serve.max_upload_bytes)")


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------------------
# Multipart and base64
# --------------------------------------------------------------------------------------------

def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[Optional[str], bytes]]:
    """``multipart/form-data`` body -> {field name: (filename or None, bytes)} (stdlib parser)."""
    if "boundary=" not in content_type:
        raise ClientError("multipart/form-data without a boundary parameter")
    msg = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise ClientError("malformed multipart/form-data body")
    fields: dict[str, tuple[Optional[str], bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True)
        fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


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
