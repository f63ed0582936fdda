"""FastAPI service: /classify, /embed, /search, /thumbs, /health, the page at /, OpenAPI docs at /docs.

Every request is bounded (docs/apps.md#limits): its body (413, declared or chunked), its wall time (504), its
image (type 415; pixels, aspect ratio and decoded bytes from the header before decoding, 413) and its text
work (labels x templates, 422). Model calls from concurrent requests are micro-batched through bounded,
smallest-job-first queues (503 when full), images are decoded by a small fixed pool of threads (so memory
is bounded by pool size x decoded-byte limit), and shutdown drops queued work instead of finishing it. Labels
and templates are validated by the same functions as the CLI's (`clipforge.apps.inputs`). The index folder
is only ever read, and the only files served from it are thumbnails whose names match NNNNNNNN.jpg.
"""

from __future__ import annotations

import asyncio
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

from clipforge import __version__
from clipforge.apps.serve.batching import BatcherStopped, MicroBatcher, QueueFull
from clipforge.apps.serve.guard import RequestGuard
from clipforge.decode import DEFAULT_LIMITS, ImageError, ImageLimits, open_image

STATIC_DIR = Path(__file__).resolve().parent / "static"
THUMB_NAME = re.compile(r"^[0-9]{8}\.jpg$")


@dataclass(frozen=True)
class ServeLimits:
    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = DEFAULT_LIMITS.max_pixels
    max_aspect_ratio: float | None = DEFAULT_LIMITS.max_aspect_ratio
    max_decoded_bytes: int = DEFAULT_LIMITS.max_decoded_bytes
    allowed_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
    request_timeout_s: float = 30.0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_labels: int = 200
    max_templates: int = 100
    max_prompts: int = 2_000  # labels x templates per request: the text work one request may ask for
    max_text_chars: int = 1000
    max_k: int = 100
    classifier_cache: int = 64  # label sets whose text embeddings are kept
    decode_workers: int = 2  # images decoded at once (memory: this x max_decoded_bytes)
    max_queued_images: int = 256
    max_queued_texts: int = 8_000
    shutdown_timeout_s: float = 5.0  # after SIGTERM, open requests get this long, then are cancelled

    def image_limits(self) -> ImageLimits:
        return ImageLimits(
            self.max_image_pixels, self.max_aspect_ratio, self.allowed_formats, self.max_decoded_bytes
        )


class ModelRunner:
    """The model behind two micro-batchers, a decode pool, and an LRU of zero-shot heads."""

    def __init__(self, model, preprocess, limits: ServeLimits):
        self.model, self.preprocess, self.limits = model.eval(), preprocess, limits
        self.device = next(model.parameters()).device
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.decoder = ThreadPoolExecutor(max_workers=limits.decode_workers, thread_name_prefix="decode")
        wait_s = limits.max_wait_ms / 1000
        self.images = MicroBatcher(
            self._encode_images, limits.max_batch, wait_s, self.executor, "image", limits.max_queued_images
        )
        self.texts = MicroBatcher(
            self._encode_texts, limits.max_batch * 4, wait_s, self.executor, "text", limits.max_queued_texts
        )
        self._heads: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._building: dict[tuple, asyncio.Future] = {}
        self._waiters: dict[tuple, int] = {}

    @torch.inference_mode()
    def _encode_images(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = self.model.encode_image(torch.stack(tensors).to(self.device), normalize=True)  # (B, E)
        return list(feats.float().cpu())

    def _encode_texts(self, texts: list[str]) -> list[torch.Tensor]:
        from clipforge.encode import encode_texts

        return list(encode_texts(self.model, texts, batch_size=len(texts)).float())

    def _decode(self, data: bytes) -> torch.Tensor:
        return self.preprocess(read_image(data, self.limits))  # (3, S, S); the decoded image is dropped here

    async def pixels(self, data: bytes) -> torch.Tensor:
        """Decode + preprocess in the bounded decode pool (never on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.decoder, self._decode, data)

    async def image_features(self, pixels: torch.Tensor) -> torch.Tensor:  # (E,)
        return await self.images.submit(pixels)

    async def text_features(self, texts: list[str]) -> torch.Tensor:  # (N, E)
        return torch.stack(await self.texts.submit_many(texts, priority=len(texts)))

    async def classifier(self, labels: tuple[str, ...], templates: tuple[str, ...]) -> torch.Tensor:
        """The zero-shot head (E, C), its prompts encoded through the text queue (other requests are served
        between its batches); concurrent identical requests share one build, which is dropped when the last
        of them gives up; kept in an LRU."""
        key = (labels, templates)
        if key in self._heads:
            self._heads.move_to_end(key)
            return self._heads[key]
        build = self._building.get(key)
        if build is None:
            build = asyncio.ensure_future(self._build_head(key))
            self._building[key] = build
            self._waiters[key] = 0
            build.add_done_callback(lambda _: self._building.pop(key, None))
        self._waiters[key] += 1
        try:
            return await asyncio.shield(build)
        finally:
            self._waiters[key] -= 1
            if not self._waiters[key]:
                del self._waiters[key]
                if not build.done():
                    build.cancel()  # nobody waits for it any more: its queued prompts are dropped

    async def _build_head(self, key: tuple) -> torch.Tensor:
        from clipforge.zeroshot.classifier import format_prompt, head_from_prompt_features

        labels, templates = key
        prompts = [format_prompt(t, c) for c in labels for t in templates]  # class-major (C*T,)
        features = await self.text_features(prompts)  # (C*T, E)
        head = head_from_prompt_features(features, len(labels), len(templates))  # (E, C)
        self._heads[key] = head
        while len(self._heads) > self.limits.classifier_cache:
            self._heads.popitem(last=False)
        return head

    async def close(self) -> None:
        await self.images.stop()
        await self.texts.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.decoder.shutdown(wait=False, cancel_futures=True)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def read_image(data: bytes, limits: ServeLimits):
    """Bytes -> decoded image (EXIF-oriented, own mode, for the exact transform), or HTTPException
    415 (type) / 413 (too many pixels or decoded bytes, too thin, a decompression bomb) / 400 (undecodable)."""
    try:
        return open_image(data, limits.image_limits())
    except ImageError as err:
        status = {"format": 415, "mode": 415, "too_large": 413}.get(err.reason, 400)
        raise HTTPException(status, str(err)) from err


async def read_upload(upload: UploadFile, runner: ModelRunner) -> torch.Tensor:
    limits = runner.limits
    data = await upload.read(limits.max_upload_bytes + 1)
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(413, f"upload larger than {limits.max_upload_bytes} bytes")
    if not data:
        raise HTTPException(400, "upload is empty")
    return await runner.pixels(data)


def split_labels(raw: str, templates: tuple[str, ...], limits: ServeLimits, model):
    """The CLI's label rules (apps.inputs / apps.classify) plus the service's caps, as a 422."""
    from clipforge.apps.classify import check_distinct_prompts
    from clipforge.apps.inputs import validate_labels

    try:
        labels = tuple(validate_labels(raw.replace("\n", ",").split(","), "labels", limits.max_labels))
        long = [x for x in labels if len(x) > limits.max_text_chars]
        if long:
            raise ValueError(
                f"labels: each at most {limits.max_text_chars} characters, {long[0][:40]!r}... is longer"
            )
        if len(labels) * len(templates) > limits.max_prompts:
            raise ValueError(
                f"labels x templates = {len(labels)} x {len(templates)} = {len(labels) * len(templates)} prompts, "
                f"above the limit {limits.max_prompts} per request"
            )
        check_distinct_prompts(labels, templates, model)
    except ValueError as err:
        raise HTTPException(422, str(err)) from None
    return labels


def split_templates(raw: str | None, limits: ServeLimits) -> tuple[str, ...]:
    from clipforge.apps.inputs import DEFAULT_TEMPLATES, validate_templates

    if not raw:
        return DEFAULT_TEMPLATES
    try:
        templates = validate_templates(raw.split("|"), "templates", limits.max_templates)
    except ValueError as err:
        raise HTTPException(422, str(err)) from None
    if any(len(t) > limits.max_text_chars for t in templates):
        raise HTTPException(422, f"templates: each at most {limits.max_text_chars} characters")
    return tuple(templates)


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
    """The service for one model and, optionally, one read-only index folder (for /search), which must have
    been embedded with this model."""
    limits = limits or ServeLimits()
    index = None
    if index_dir is not None:
        from clipforge.apps.search import SearchIndex

        index = SearchIndex(index_dir)
        index.check_model(model)
    runner = ModelRunner(model, preprocess, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runner.images.start()
        await runner.texts.start()
        yield
        await runner.close()

    app = FastAPI(
        title="clipforge",
        version=__version__,
        lifespan=lifespan,
        description="Zero-shot classification, embeddings and search with a CLIP model.",
    )
    app.state.runner, app.state.index, app.state.limits = runner, index, limits
    # multipart overhead on top of the file itself
    app.add_middleware(
        RequestGuard, max_body_bytes=limits.max_upload_bytes + 64 * 1024, timeout_s=limits.request_timeout_s
    )

    @app.exception_handler(QueueFull)
    async def busy(request: Request, error: QueueFull) -> JSONResponse:
        return JSONResponse(
            {"detail": f"server busy ({error}); retry later"}, 503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(BatcherStopped)
    async def stopping(request: Request, error: BatcherStopped) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, 503)

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
            "backend": getattr(runner.model, "backend", "torch"),  # what runs the image tower (apps.backend)
            "index_size": len(index) if index is not None else 0,
            "batching": {"image": runner.images.stats.to_dict(), "text": runner.texts.stats.to_dict()},
            "queued": {"image": runner.images.queued, "text": runner.texts.queued},
        }

    @router.post("/classify")
    async def classify(
        image: Annotated[UploadFile, File(description="JPEG/PNG/WebP/GIF/BMP image")],
        labels: Annotated[str, Form(description="two or more comma-separated labels, e.g. 'cat,dog,car'")],
        templates: Annotated[
            str | None, Form(description="'|'-separated, each with {} for the label")
        ] = None,
    ) -> dict:
        template_tuple = split_templates(templates, limits)
        # tokenising up to max_prompts prompts: off the event loop
        label_tuple = await asyncio.to_thread(split_labels, labels, template_tuple, limits, runner.model)
        pixels = await read_upload(image, runner)
        features, head = await asyncio.gather(
            runner.image_features(pixels), runner.classifier(label_tuple, template_tuple)
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
            vector = await runner.image_features(await read_upload(image, runner))
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
        parts = [await runner.image_features(await read_upload(image, runner))]
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
