"""The web service through httpx/TestClient: answers, micro-batching, limits and path safety."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("faiss")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from test_apps_helpers import TEMPLATE, cached_tiny_clip, cifar_classes, cifar_rows  # noqa: E402

from clipforge.apps.serve import ServeLimits, create_app  # noqa: E402
from clipforge.transforms import Preprocess  # noqa: E402

PER_CLASS = 20  # indexed test images per class


@pytest.fixture(scope="module")
def model(shared_data, tmp_path_factory):
    return cached_tiny_clip(shared_data, tmp_path_factory.getbasetemp().parent)


def build_index(model, shared_data, tmp):
    """A flat index over 200 CIFAR-10 test images (20 per class), built with the embed + index apps."""
    from clipforge.apps.embed import embed_source
    from clipforge.apps.index import build_index_dir

    rows = cifar_rows(shared_data, "test")
    picked = [r for c in range(10) for r in [r for r in rows if int(r["label"]) == c][:PER_CLASS]]
    table = tmp / "images.csv"
    lines = "".join(f"{shared_data / 'cifar10' / r['path']},{r['class_name']}\n" for r in picked)
    table.write_text("path,label\n" + lines)
    preprocess = Preprocess(model.config.preprocess)
    embed_source(
        model, preprocess, table, tmp / "emb", shard_size=64, metadata_format="jsonl", progress=False
    )
    build_index_dir(tmp / "emb", tmp / "index", progress=False)
    return tmp / "index"


@pytest.fixture(scope="module")
def index_dir(model, shared_data, tmp_path_factory):
    index = build_index(model, shared_data, tmp_path_factory.mktemp("serve"))
    os.chmod(index, 0o555)  # the service must not need to write there
    yield index
    os.chmod(index, 0o755)


def make_client(model, index_dir, **limits) -> TestClient:
    app = create_app(model, Preprocess(model.config.preprocess), index_dir, ServeLimits(**limits), "tiny")
    return TestClient(app)


@pytest.fixture(scope="module")
def client(model, index_dir):
    with make_client(model, index_dir, max_upload_bytes=200_000, max_image_pixels=1_000_000) as c:
        yield c


def jpeg_bytes(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_health_docs_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["index_size"] == 10 * PER_CLASS and health["embed_dim"] == 64
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/classify", "/embed", "/search", "/health"} <= set(paths)
    assert set(paths["/search"]) == {"get", "post"}
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="classify-btn"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_classify_beats_chance_on_cifar10(client, shared_data):
    classes = cifar_classes(shared_data)
    rows = cifar_rows(shared_data, "test")
    picked = [r for c in range(10) for r in [r for r in rows if int(r["label"]) == c][-10:]]  # not indexed
    correct = 0
    for row in picked:
        data = (shared_data / "cifar10" / row["path"]).read_bytes()
        response = client.post(
            "/classify", files={"image": ("x.jpg", data, "image/jpeg")}, data={"labels": ",".join(classes)}
        )
        assert response.status_code == 200, response.text
        labels = response.json()["labels"]
        assert sorted(x["label"] for x in labels) == sorted(classes)
        assert sum(x["prob"] for x in labels) == pytest.approx(1.0, abs=1e-4)
        assert labels == sorted(labels, key=lambda x: -x["prob"])
        correct += labels[0]["label"] == row["class_name"]
    assert correct / len(picked) >= 0.18, f"top-1 {correct}/{len(picked)}; chance is 10%"


def test_embed_equals_model_and_text_search_finds_the_class(client, model, shared_data):
    import clipforge

    text = "a photo of a cat."
    served = np.array(client.post("/embed", data={"text": text}).json()["embedding"])
    with torch.inference_mode():
        expected = model.encode_text(clipforge.tokenize([text]), normalize=True)[0].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    precisions = []
    for name in cifar_classes(shared_data):
        results = client.get("/search", params={"q": TEMPLATE.format(name), "k": 10}).json()["results"]
        assert len(results) == 10 and all(r["thumbnail_url"] for r in results)
        precisions.append(sum(r["metadata"]["label"] == name for r in results) / 10)
    assert np.mean(precisions) >= 0.2, f"mean precision@10 {np.mean(precisions):.2f}; chance 0.1"


def test_image_search_finds_itself_and_thumbnail_serves(client, index_dir):
    meta = [line for line in (index_dir / "metadata.jsonl").read_text().splitlines()]
    import json

    path = json.loads(meta[37])["path"]
    data = Path(path).read_bytes()
    results = client.post("/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"k": "3"}).json()
    top = results["results"][0]
    assert top["id"] == 37 and top["score"] == pytest.approx(1.0, abs=1e-3)
    thumb = client.get(top["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content == (index_dir / "thumbs" / "00000037.jpg").read_bytes()
    both = client.post(
        "/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"q": "a photo of a cat."}
    )
    assert both.status_code == 200 and len(both.json()["results"]) == 12


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_concurrent_requests_are_micro_batched(model, index_dir, shared_data, backend):
    """The same batching, and PyTorch's features within 1e-5, whichever backend runs the image tower."""
    import httpx

    from clipforge.apps.backend import use_backend

    if backend != "torch":
        pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[backend])
    rows = cifar_rows(shared_data, "test")[:16]
    images = [(shared_data / "cifar10" / r["path"]).read_bytes() for r in rows]
    served_model = use_backend(model, backend)
    assert getattr(served_model, "backend", "torch") == backend
    limits = ServeLimits(max_wait_ms=50)
    app = create_app(served_model, Preprocess(model.config.preprocess), index_dir, limits)
    preprocess = Preprocess(model.config.preprocess)

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                responses = await asyncio.gather(
                    *(http.post("/embed", files={"image": ("a.jpg", d, "image/jpeg")}) for d in images)
                )
                return [r.json()["embedding"] for r in responses], (await http.get("/health")).json()

    served, health = asyncio.run(go())
    stats = health["batching"]["image"]
    assert health["backend"] == backend
    assert stats["items"] == 16 and stats["largest_batch"] > 1 and stats["batches"] < 16
    with torch.inference_mode():
        batch = torch.stack([preprocess(Image.open(io.BytesIO(d)).convert("RGB")) for d in images])
        expected = model.encode_image(batch, normalize=True).numpy()
    np.testing.assert_allclose(np.array(served), expected, atol=1e-5)  # each request got its own row


@pytest.mark.parametrize(
    ("files", "data", "status"),
    [
        (None, {"labels": "cat,dog"}, 422),  # no image
        ({"image": ("x.jpg", b"", "image/jpeg")}, {"labels": "cat,dog"}, 400),  # empty
        ({"image": ("x.jpg", b"not an image at all", "image/jpeg")}, {"labels": "cat,dog"}, 400),
        ({"image": ("x.jpg", "RED", "image/jpeg")}, {"labels": "cat"}, 422),  # one label
        ({"image": ("x.jpg", "RED", "image/jpeg")}, {"labels": "cat,dog", "templates": "no slot"}, 422),
        ({"image": ("x.tif", "TIFF", "image/tiff")}, {"labels": "cat,dog"}, 415),  # type not allowed
        ({"image": ("x.png", "BOMB", "image/png")}, {"labels": "cat,dog"}, 413),  # 4 Mpx > 1 Mpx limit
        ({"image": ("x.png", "HUGE", "image/png")}, {"labels": "cat,dog"}, 413),  # > 200 kB upload
    ],
)
def test_bad_input_gets_a_clear_4xx(client, files, data, status):
    payloads = {
        "RED": jpeg_bytes(Image.new("RGB", (40, 40), "red")),
        "TIFF": jpeg_bytes(Image.new("RGB", (40, 40), "red"), "TIFF"),
        "BOMB": jpeg_bytes(Image.new("1", (2000, 2000)), "PNG"),  # tiny file, 4M pixels
        "HUGE": jpeg_bytes(
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8)), "PNG"
        ),
    }
    if files:
        name, content, mime = files["image"]
        files = {"image": (name, payloads.get(content, content), mime)}
    response = client.post("/classify", files=files, data=data)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], (str, list)) and response.json()["detail"]


def test_embed_and_search_validation(client):
    assert client.post("/embed").status_code == 422  # neither text nor image
    assert client.post("/embed", data={"text": " "}).status_code == 422
    assert client.post("/embed", data={"text": "x" * 5000}).status_code == 422
    assert client.get("/search").status_code == 422  # q missing
    assert client.get("/search", params={"q": "cat", "k": 0}).status_code == 422


@pytest.mark.parametrize(
    "url",
    [
        "/thumbs/../index.json",
        "/thumbs/..%2Findex.json",
        "/thumbs/%2e%2e%2fmetadata.jsonl",
        "/thumbs/..%2F..%2F..%2Fetc%2Fpasswd",
        "/thumbs/%2Fetc%2Fpasswd",
        "/thumbs/00000001.jpg%00.json",
        "/thumbs/..%5Cindex.json",
        "/thumbs/99999999.jpg",
        "/static/../index.faiss",
        "/static/..%2F..%2F..%2Fpyproject.toml",
        "/thumbs/index.faiss",
    ],
)
def test_no_path_escapes_the_index_folder(client, index_dir, url):
    response = client.get(url)
    assert response.status_code in (400, 404), (url, response.status_code)
    secret = (index_dir / "index.json").read_bytes()
    assert secret not in response.content


def test_index_folder_is_untouched(client, index_dir):
    before = {p: p.stat().st_mtime_ns for p in index_dir.rglob("*")}
    client.get("/search", params={"q": "a dog"})
    client.get("/thumbs/00000000.jpg")
    assert {p: p.stat().st_mtime_ns for p in index_dir.rglob("*")} == before


def test_request_timeout_is_a_504(model, index_dir):
    with make_client(model, index_dir, request_timeout_s=0.2) as client:
        runner = client.app.state.runner
        original = runner._encode_images
        runner.images.fn = lambda items: (time.sleep(1.0), original(items))[1]
        data = jpeg_bytes(Image.new("RGB", (32, 32), "blue"))
        response = client.post("/embed", files={"image": ("b.jpg", data, "image/jpeg")})
        assert response.status_code == 504 and "longer than" in response.json()["detail"]
