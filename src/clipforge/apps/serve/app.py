"""FastAPI service: /classify, /embed, /search, /thumbs, /health, the page at /, OpenAPI docs at /docs.

Model calls from concurrent requests are micro-batched (one image queue, one text queue). Uploads are
size-limited while they stream in, images are type-checked from their header and refused above a pixel
limit before decoding, and every request has a time limit. The index folder is only ever read, and
the only files served from it are thumbnails whose names match NNNNNNNN.jpg under thumbs/.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from clipforge import __version__
from clipforge.apps.serve.batching import MicroBatcher
from clipforge.decode import DEFAULT_LIMITS, ImageError, ImageLimits, open_image

STATIC_DIR = Path(__file__).resolve().parent / "static"
THUMB_NAME = re.compile(r"^[0-9]{8}\.jpg$")


@dataclass(frozen=True)
class ServeLimits:
    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = DEFAULT_LIMITS.max_pixels
    max_aspect_ratio: float | None = DEFAULT_LIMITS.max_aspect_ratio
    allowed_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
    request_timeout_s: float = 30.0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_labels: int = 200
    max_text_chars: int = 1000
    max_k: int = 100
    classifier_cache: int = 64  # label sets whose text embeddings are kept


class BodyTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """ASGI middleware: 413 as soon as a request body exceeds the limit (declared or streamed)."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reject(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_body_bytes} bytes"}, status_code=413
        )
        await response({"type": "http"}, None, send)


class ModelRunner:
    """The model behind two micro-batchers and an LRU of zero-shot heads keyed by (labels, templates)."""

    def __init__(self, model, preprocess, limits: ServeLimits):
        self.model, self.preprocess, self.limits = model.eval(), preprocess, limits
        self.device = next(model.parameters()).device
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        wait_s = limits.max_wait_ms / 1000
        self.images = MicroBatcher(self._encode_images, limits.max_batch, wait_s, self.executor, "image")
        self.texts = MicroBatcher(self._encode_texts, limits.max_batch * 4, wait_s, self.executor, "text")
        self._heads: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @torch.inference_mode()
    def _encode_images(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = self.model.encode_image(torch.stack(tensors).to(self.device), normalize=True)  # (B, E)
        return list(feats.float().cpu())

    def _encode_texts(self, texts: list[str]) -> list[torch.Tensor]:
        from clipforge.encode import encode_texts

        return list(encode_texts(self.model, texts, batch_size=len(texts)))

    async def image_features(self, image: Image.Image) -> torch.Tensor:  # (E,)
        pixels = await asyncio.to_thread(self.preprocess, image)  # resize off the event loop
        return await self.images.submit(pixels)

    async def text_features(self, texts: list[str]) -> torch.Tensor:  # (N, E)
        return torch.stack(await asyncio.gather(*(self.texts.submit(t) for t in texts)))

    async def classifier(self, labels: tuple[str, ...], templates: tuple[str, ...]) -> torch.Tensor:
        """The zero-shot head (E, C) of `build_classifier`, run on the model thread, kept in an LRU."""
        from clipforge.zeroshot.classifier import build_classifier

        key = (labels, templates)
        if key in self._heads:
            self._heads.move_to_end(key)
            return self._heads[key]
        build = functools.partial(
            build_classifier, self.model, list(labels), list(templates), cache_dir=False, progress=False
        )
        head = (await asyncio.get_running_loop().run_in_executor(self.executor, build)).cpu()  # (E, C)
        self._heads[key] = head
        while len(self._heads) > self.limits.classifier_cache:
            self._heads.popitem(last=False)
        return head

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def read_image(data: bytes, limits: ServeLimits) -> Image.Image:
    """Bytes -> decoded image (EXIF-oriented, own mode, for the exact transform), or HTTPException
    415 (type) / 413 (too many pixels, too thin, or a decompression bomb) / 400 (undecodable)."""
    image_limits = ImageLimits(
        limits.max_image_pixels, limits.max_aspect_ratio, formats=limits.allowed_formats
    )
    try:
        return open_image(data, image_limits)
    except ImageError as err:
        status = {"format": 415, "mode": 415, "too_large": 413}.get(err.reason, 400)
        raise HTTPException(status, str(err)) from err


async def read_upload(upload: UploadFile, limits: ServeLimits) -> Image.Image:
    data = await upload.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {limits.max_upload_bytes} bytes")
    if not data:
        raise HTTPException(400, "upload is empty")
    return await asyncio.to_thread(read_image, data, limits)  # decoding must not block the event loop


def split_labels(raw: str, limits: ServeLimits) -> tuple[str, ...]:
    labels = tuple(dict.fromkeys(x.strip() for x in raw.replace("\n", ",").split(",") if x.strip()))
    if len(labels) < 2:
        raise HTTPException(422, "labels: give at least two comma-separated labels, e.g. 'cat,dog'")
    if len(labels) > limits.max_labels or any(len(x) > limits.max_text_chars for x in labels):
        raise HTTPException(
            422, f"labels: at most {limits.max_labels}, each <= {limits.max_text_chars} chars"
        )
    return labels


def split_templates(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ("a photo of a {}.",)
    templates = tuple(t.strip() for t in raw.split("|") if t.strip())
    if not templates or any("{}" not in t for t in templates):
        raise HTTPException(422, "templates: '|'-separated, each with a '{}' for the label")
    return templates


def check_text(text: str, limits: ServeLimits, field: str) -> str:
    text = text.strip()
    if not text:
        raise HTTPException(422, f"{field}: empty")
    if len(text) > limits.max_text_chars:
        raise HTTPException(422, f"{field}: longer than {limits.max_text_chars} characters")
    return text


def create_app(
    model,
    preprocess,
    index_dir: str | Path | None = None,
    limits: ServeLimits | None = None,
    model_name: str = "",
) -> FastAPI:
    """The service for one model and, optionally, one read-only index folder (for /search)."""
    limits = limits or ServeLimits()
    runner = ModelRunner(model, preprocess, limits)
    index = None
    if index_dir is not None:
        from clipforge.apps.search import SearchIndex

        index = SearchIndex(index_dir)
        if index.dim != model.config.embed_dim:
            raise ValueError(
                f"{index_dir}: index dim {index.dim} != model embed_dim {model.config.embed_dim}"
            )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runner.images.start()
        await runner.texts.start()
        yield
        await runner.images.stop()
        await runner.texts.stop()

    app = FastAPI(
        title="clipforge",
        version=__version__,
        lifespan=lifespan,
        description="Zero-shot classification, embeddings and search with a CLIP model.",
    )
    app.state.runner, app.state.index, app.state.limits = runner, index, limits
    # multipart overhead on top of the file itself
    app.add_middleware(UploadLimitMiddleware, max_body_bytes=limits.max_upload_bytes + 64 * 1024)

    @app.middleware("http")
    async def time_limit(request: Request, call_next):
        try:
            return await asyncio.wait_for(call_next(request), limits.request_timeout_s)
        except TimeoutError:  # builtin TimeoutError only from 3.11
            return JSONResponse({"detail": f"request took longer than {limits.request_timeout_s}s"}, 504)

    app.include_router(model_router(runner, limits, model_name, index))
    app.include_router(search_router(runner, limits, index))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def model_router(runner: ModelRunner, limits: ServeLimits, model_name: str, index) -> APIRouter:
    """/health, /classify, /embed."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "embed_dim": runner.model.config.embed_dim,
            "index_size": len(index) if index is not None else 0,
            "batching": {"image": runner.images.stats.to_dict(), "text": runner.texts.stats.to_dict()},
        }

    @router.post("/classify")
    async def classify(
        image: Annotated[UploadFile, File(description="JPEG/PNG/WebP/GIF/BMP image")],
        labels: Annotated[str, Form(description="comma-separated labels, e.g. 'cat,dog,car'")],
        templates: Annotated[
            str | None, Form(description="'|'-separated, each with {} for the label")
        ] = None,
    ) -> dict:
        label_tuple, template_tuple = split_labels(labels, limits), split_templates(templates)
        picture = await read_upload(image, limits)
        features, head = await asyncio.gather(
            runner.image_features(picture), runner.classifier(label_tuple, template_tuple)
        )
        probs = (runner.logit_scale * features @ head).softmax(-1).tolist()  # (C,)
        ranked = sorted(zip(label_tuple, probs, strict=True), key=lambda lp: -lp[1])
        return {"labels": [{"label": lab, "prob": p} for lab, p in ranked]}

    @router.post("/embed")
    async def embed(
        image: Annotated[UploadFile | None, File()] = None, text: Annotated[str | None, Form()] = None
    ) -> dict:
        if (image is None) == (text is None):
            raise HTTPException(422, "send exactly one of: an image file field 'image', a form field 'text'")
        if text is not None:
            vector = (await runner.text_features([check_text(text, limits, "text")]))[0]
        else:
            vector = await runner.image_features(await read_upload(image, limits))
        return {
            "kind": "text" if text is not None else "image",
            "dim": len(vector),
            "embedding": vector.tolist(),
        }

    return router


def search_router(runner: ModelRunner, limits: ServeLimits, index) -> APIRouter:
    """/search (text: GET, image or both: POST) and /thumbs/NNNNNNNN.jpg from the read-only index folder."""
    router = APIRouter()

    def run_search(query: torch.Tensor, k: int) -> dict:
        if index is None:
            raise HTTPException(404, "this service has no index (start it with --index DIR)")
        hits = index.search(torch.nn.functional.normalize(query, dim=0).numpy()[None], k)[0]
        results = []
        for hit in hits:
            item = hit.to_dict()
            item["thumbnail_url"] = f"/thumbs/{hit.thumbnail}" if hit.thumbnail else None
            results.append(item)
        return {"results": results}

    @router.get("/search")
    async def search_text(
        q: Annotated[str, Query(description="text query")], k: Annotated[int, Query(ge=1)] = 12
    ) -> dict:
        vector = (await runner.text_features([check_text(q, limits, "q")]))[0]
        return run_search(vector, min(k, limits.max_k))

    @router.post("/search")
    async def search_image(
        image: Annotated[UploadFile, File()],
        q: Annotated[str | None, Form()] = None,
        k: Annotated[int, Form(ge=1)] = 12,
    ) -> dict:
        parts = [await runner.image_features(await read_upload(image, limits))]
        if q:
            parts.append((await runner.text_features([check_text(q, limits, "q")]))[0])
        return run_search(torch.stack(parts).sum(0), min(k, limits.max_k))

    @router.get("/thumbs/{name}")
    async def thumbnail(name: str) -> FileResponse:
        if index is None or not THUMB_NAME.match(name):
            raise HTTPException(404, "no such thumbnail")
        thumbs = (index.folder / "thumbs").resolve()
        path = (thumbs / name).resolve()
        if path.parent != thumbs or not path.is_file():
            raise HTTPException(404, "no such thumbnail")
        return FileResponse(path, media_type="image/jpeg")

    return router
