"""Fault corpus, part 5 (issue #15 class 3, and the service side of classes 2 and 6): resource bombs refused
before decoding, text work bounded per request, oversized bodies 413 however they are sent, a bounded
smallest-job-first queue, and labels judged by the same rules and words as on the command line."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from fault_helpers import png_header, workspace  # noqa: E402
from PIL import Image  # noqa: E402

from clipforge.apps.serve import ServeLimits, create_app  # noqa: E402
from clipforge.apps.serve.batching import BatcherStopped, MicroBatcher  # noqa: E402
from clipforge.transforms import Preprocess  # noqa: E402


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


def _model(ws, key="tiny_pt"):
    from clipforge.checkpoints import load_any

    return load_any(ws[key]).eval()


def client_for(ws, key="tiny_pt", **limits) -> TestClient:
    model = _model(ws, key)
    return TestClient(create_app(model, Preprocess(model.config.preprocess), None, ServeLimits(**limits)))


@pytest.fixture(scope="module")
def client(ws):
    with client_for(ws, max_upload_bytes=300_000, max_decoded_bytes=2_000_000) as c:
        yield c


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


RED = png(Image.new("RGB", (40, 40), "red"))


def classify(client, labels="cat,dog", templates=None, image=RED, name="x.png"):
    data = {"labels": labels} | ({"templates": templates} if templates is not None else {})
    return client.post("/classify", files={"image": (name, image, "image/png")}, data=data)


def thin_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (1, 300_000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "detail"),
    [
        (thin_png(), r"image is 1x300000, aspect ratio 300000:1 above the limit 40:1"),
        (png_header(1, 40_000_000), r"image is 1x40000000"),
        (png_header(10_000, 10_000), r"= 100,000,000 pixels, above the limit 40,000,000"),
        (
            png_header(40_000, 40_000),
            r"refused by PIL's decompression-bomb limit \(Image size \(1600000000 pixels\)",
        ),
        (
            png(Image.new("RGB", (800, 800))),
            r"800x800 RGB, 2,560,000 bytes decoded, above the limit 2,000,000",
        ),
        (png_header(20_000, 500, color_type=2), r"aspect ratio 40:1|bytes decoded"),
    ],
    ids=[
        "thin-strip-664-bytes",
        "one-by-40-million",
        "100-megapixel-header",
        "gigapixel-header",
        "decoded-bytes",
        "wide-rgb",
    ],
)
def test_image_bombs_are_413_before_decoding(client, image, detail):
    import re

    started = time.perf_counter()
    response = client.post("/embed", files={"image": ("x.png", image, "image/png")})
    assert response.status_code == 413 and re.search(detail, response.json()["detail"]), response.text
    assert time.perf_counter() - started < 2.0  # refused from the header, not after a decode


def test_an_image_at_the_aspect_limit_is_accepted(client):
    assert (
        client.post(
            "/embed", files={"image": ("x.png", png(Image.new("RGB", (400, 10))), "image/png")}
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("labels", "templates", "detail"),
    [
        (",".join(f"l{i}" for i in range(200)), "|".join(f"t{j} {{}}" for j in range(500)), r"500 templates, at most 100 allowed"),
        (",".join(f"l{i}" for i in range(100)), "|".join(f"t{j} {{}}" for j in range(30)),
         r"labels x templates = 100 x 30 = 3000 prompts, above the limit 2000 per request"),
        (",".join(f"l{i}" for i in range(201)), None, r"201 labels, at most 200 allowed"),
        ("cat," + "x" * 1001, None, r"each at most 1000 characters"),
        ("cat,dog", "{}" + "x" * 1001, r"templates: each at most 1000 characters"),
    ],
    ids=["templates-flood", "prompt-product", "too-many-labels", "label-too-long", "template-too-long"],
)  # fmt: skip
def test_text_work_per_request_is_bounded(client, labels, templates, detail):
    import re

    response = classify(client, labels, templates)
    assert response.status_code == 422 and re.search(detail, response.json()["detail"]), response.text


@pytest.mark.parametrize(
    ("labels", "templates"),
    [("cat", None), ("cat,dog,cat", None), ("Cat,cat", None), ("sea lion,sea  lion", None), (",,", None),
     ("cat,dog", "a photo"), ("cat,dog", "a {}|a {}")],
    ids=["one-label", "duplicate", "case-twins", "space-twins", "no-labels", "no-slot", "duplicate-templates"],
)  # fmt: skip
def test_labels_are_judged_as_on_the_command_line(client, labels, templates):
    from clipforge.apps.inputs import validate_labels, validate_templates

    response = classify(client, labels, templates)
    assert response.status_code == 422
    try:
        validate_templates(templates.split("|"), "templates") if templates else None
        validate_labels(labels.split(","), "labels")
    except ValueError as error:
        cli_message = str(error)
    assert response.json()["detail"] == cli_message  # the same rule, in the same words


def test_labels_the_model_cannot_tell_apart_are_refused(ws):
    with client_for(ws, key="short_st") as c:
        labels = "a tabby cat sitting on a red sofa in the sun at noon,a tabby cat sitting on a red sofa in the sun at night"
        response = classify(c, labels)
    assert response.status_code == 422 and "16-token context" in response.json()["detail"]


def test_two_distinct_labels_get_two_scores(client):
    response = classify(client, "cat,dog")
    assert response.status_code == 200 and [x["label"] for x in response.json()["labels"]] in (
        ["cat", "dog"],
        ["dog", "cat"],
    )


def _raw(app_client: TestClient, body, headers: dict) -> int:
    return app_client.post("/embed", content=body, headers=headers).status_code


def test_oversized_chunked_upload_is_413(client):
    def chunks():
        yield b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        for _ in range(50):
            yield b"\0" * 20_000
        yield b"\r\n--B--\r\n"

    response = client.post(
        "/embed", content=chunks(), headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert response.status_code == 413 and "request body larger than" in response.json()["detail"]


@pytest.mark.parametrize(("length", "status"), [("5000000", 413), ("12abc", 400), ("-1", 400)])
def test_declared_body_size_is_checked_first(client, length, status):
    assert (
        _raw(client, b"x", {"content-length": length, "content-type": "multipart/form-data; boundary=B"})
        == status
    )


@pytest.mark.parametrize(
    ("files", "data", "status"),
    [
        ({"image": ("x.png", b"", "image/png")}, None, 400),
        ({"image": ("x.tif", "TIFF", "image/tiff")}, None, 415),
        ({"image": ("x.png", RED, "image/png")}, {"text": "a cat"}, 422),
        (None, {"text": "x" * 1001}, 422),
    ],
    ids=["empty-upload", "tiff-not-allowed", "image-and-text", "text-too-long"],
)
def test_embed_inputs(client, files, data, status):
    if files and files["image"][1] == "TIFF":
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "TIFF")
        files = {"image": ("x.tif", buffer.getvalue(), "image/tiff")}
    assert client.post("/embed", files=files, data=data).status_code == status


def test_a_full_queue_answers_503_with_retry_after(ws):
    with client_for(ws, max_queued_texts=5) as c:
        response = classify(c, "cat,dog,bird", "a {}|the {}")  # 6 prompts > 5 queue places
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "server busy" in response.json()["detail"]


# ---- the queue itself: smallest job first, dropped when abandoned, stopped on shutdown ----------------


def recording(seen: list, seconds: float):
    """A model call that takes `seconds` per batch and records the items in the order it ran them."""

    def fn(items):
        time.sleep(seconds)
        seen.extend(items)
        return items

    return fn


def test_a_small_request_overtakes_a_queued_flood():
    order = []

    async def go():
        batcher = MicroBatcher(recording(order, 0.01), max_batch=10, max_wait_s=0.001, name="text")
        await batcher.start()
        flood = asyncio.ensure_future(batcher.submit_many([f"flood{i}" for i in range(200)], priority=200))
        await asyncio.sleep(0.02)  # the flood is queued and its first batches run
        await batcher.submit_many(["small"], priority=1)
        position = order.index("small")
        await flood
        await batcher.stop()
        return position

    assert asyncio.run(go()) <= 60  # served after a few flood batches, not after all 200 items


def test_an_abandoned_request_drops_its_queued_items():
    seen = []

    async def go():
        batcher = MicroBatcher(recording(seen, 0.005), max_batch=8, max_wait_s=0.001, name="text")
        await batcher.start()
        request = asyncio.ensure_future(batcher.submit_many(list(range(400))))
        await asyncio.sleep(0.02)
        request.cancel()  # the client timed out / went away
        await asyncio.sleep(0.1)
        await batcher.stop()

    asyncio.run(go())
    assert 0 < len(seen) < 100


def test_shutdown_answers_the_queued_requests_instead_of_running_them():
    async def go():
        batcher = MicroBatcher(
            lambda items: (time.sleep(0.05), items)[1], max_batch=1, max_wait_s=0.0, name="image"
        )
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(20)]
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await batcher.stop()
        results = await asyncio.gather(*pending, return_exceptions=True)
        return results, time.perf_counter() - started

    results, stop_s = asyncio.run(go())
    stopped = [r for r in results if isinstance(r, BatcherStopped)]
    assert len(stopped) >= 15 and stop_s < 1.0


def test_identical_concurrent_requests_share_one_head(ws):
    import httpx

    model = _model(ws)
    app = create_app(model, Preprocess(model.config.preprocess), None, ServeLimits())
    runner = app.state.runner
    encoded = []
    original = runner.texts.fn
    runner.texts.fn = lambda texts: (encoded.extend(texts), original(texts))[1]

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                data = {
                    "labels": ",".join(f"class {i}" for i in range(40)),
                    "templates": "a {}|the {}|one {}",
                }
                return await asyncio.gather(
                    *(
                        http.post("/classify", files={"image": ("x.png", RED, "image/png")}, data=data)
                        for _ in range(8)
                    )
                )

    responses = asyncio.run(go())
    assert all(r.status_code == 200 for r in responses) and len(encoded) == 120  # 40 x 3 prompts, once


# ---- slow clients on a real uvicorn server: headers that never finish are answered 408 and closed ----------


def test_a_connection_whose_headers_never_finish_is_answered_408_and_closed():
    import socket
    import threading

    uvicorn = pytest.importorskip("uvicorn")
    from clipforge.apps.serve.connections import header_timeout_protocol

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            http=header_timeout_protocol(0.5))  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as slow,
            socket.create_connection(("127.0.0.1", port), timeout=10) as polite,
        ):
            slow.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")  # ... and nothing more
            started = time.perf_counter()
            polite.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert polite.recv(100).startswith(b"HTTP/1.1 200")  # a complete request is not cut
            answer = b""
            while chunk := slow.recv(1000):  # until the server closes the connection
                answer += chunk
            waited = time.perf_counter() - started
        assert answer.startswith(b"HTTP/1.1 408") and b"request headers took longer than 0.5s" in answer
        assert 0.4 < waited < 5.0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
