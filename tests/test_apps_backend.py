"""--backend {auto,torch,onnx}: every backend gives PyTorch's outputs within 1e-5 (fp32), in the library and
through `clipforge classify` / `clipforge embed` / `clipforge serve` on real CIFAR-10 images."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import clipforge  # noqa: E402
from clipforge.apps.backend import BACKENDS, OnnxImageCLIP, use_backend  # noqa: E402

TOL = 1e-5


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-resnet"])
def test_backends_give_pytorch_features(name):
    torch.manual_seed(0)
    reference = clipforge.create_model(name).eval()
    size = reference.config.preprocess.image_size
    images = torch.randn(5, 3, size, size)
    tokens = clipforge.tokenize(["a photo of a cat", "x"], context_length=reference.context_length)
    with torch.inference_mode():
        want_image = reference.encode_image(images, normalize=True)
        want_text = reference.encode_text(tokens, normalize=True)
        for backend in ("torch", "onnx", "auto"):
            model = use_backend(copy.deepcopy(reference), backend)
            assert isinstance(model, OnnxImageCLIP) == (backend != "torch")  # auto on CPU: ONNX Runtime
            image = model.encode_image(images, normalize=True)
            assert image.shape == want_image.shape and image.dtype == torch.float32
            assert (image - want_image).abs().max().item() <= TOL, backend
            assert (model.encode_text(tokens, normalize=True) - want_text).abs().max().item() <= TOL
            assert model.logit_scale is not None and model.config == reference.config
            assert not reference.training and not model.training  # BatchNorm statistics stay frozen
            state = model.state_dict()  # outputs record the weights' fingerprint: they must not change
            assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())


def test_unknown_backend_and_text_only_use():
    model = clipforge.create_model("tiny-vit").eval()
    with pytest.raises(ValueError, match="expected one of auto, torch, onnx"):
        use_backend(model, "tensorrt")
    assert not isinstance(use_backend(model, "onnx", images=False), OnnxImageCLIP)  # nothing to export


@pytest.fixture(scope="module")
def checkpoint_and_images(shared_data, tmp_path_factory):
    from clipforge.checkpoints import save

    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("backend")
    folder = root / "images"
    for cls in ("airplane", "cat", "ship"):
        (folder / cls).mkdir(parents=True)
        for image in sorted((shared_data / "cifar10" / "images" / "test" / cls).glob("*.jpg"))[:4]:
            shutil.copy(image, folder / cls / image.name)
    return str(save(clipforge.create_model("tiny-vit").eval(), root / "tiny.pt")), folder


def test_classify_backends_agree(checkpoint_and_images, shared_data, tmp_path):
    from clipforge.commands.classify import main

    checkpoint, folder = checkpoint_and_images
    labels = str(shared_data / "cifar10" / "classes.txt")
    probs = {}
    for backend in ("torch", "onnx", "auto"):
        args = [str(folder), "--labels", labels, "--checkpoint", checkpoint, "--backend", backend]
        result = main([*args, "--top-k", "10", "--quiet", "--no-cache", "--device", "cpu"])
        assert result["num_images"] == 12 and not result["failures"]
        probs[backend] = np.array(
            [[row[key] for key in sorted(row) if key.startswith("prob")] for row in result["predictions"]]
        )
    for backend in ("onnx", "auto"):
        np.testing.assert_allclose(probs[backend], probs["torch"], atol=TOL, rtol=0)


def test_embed_backends_agree(checkpoint_and_images, tmp_path):
    from clipforge.apps.embed import load_embeddings
    from clipforge.commands.embed import main

    checkpoint, folder = checkpoint_and_images
    vectors = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        args = [str(folder), "--out", str(out), "--checkpoint", checkpoint, "--backend", backend]
        main([*args, "--dtype", "float32", "--metadata", "jsonl", "--quiet", "--device", "cpu"])
        vectors[backend], meta = load_embeddings(out)
        assert vectors[backend].shape == (12, 64) and len(meta) == 12
    np.testing.assert_allclose(vectors["onnx"], vectors["torch"], atol=TOL, rtol=0)
    assert np.abs(np.linalg.norm(vectors["onnx"], axis=1) - 1).max() < 1e-5


def test_auto_warns_and_keeps_pytorch_when_the_export_fails(monkeypatch):
    import clipforge.apps.onnx_export as onnx_export

    def fail(model, path):
        raise RuntimeError("exporter cannot trace this tower")

    monkeypatch.setattr(onnx_export, "export_image_tower", fail)
    model = clipforge.create_model("tiny-vit").eval()
    with pytest.warns(UserWarning, match="ONNX Runtime not used .*cannot trace"):
        assert not isinstance(use_backend(model, "auto"), OnnxImageCLIP)
    with pytest.raises(RuntimeError, match="cannot trace"):
        use_backend(model, "onnx")


def test_backend_flag_on_the_commands_that_run_the_image_tower():
    from clipforge.commands import classify, embed, export_onnx, search, serve

    for command in (classify, embed, serve):
        actions = {a.dest: a for a in command.build_parser()._actions}
        assert actions["backend"].default == "auto" and tuple(actions["backend"].choices) == BACKENDS
    for command in (search, export_onnx):  # one image at most / no tower run: nothing to choose
        assert "backend" not in {a.dest for a in command.build_parser()._actions}


def test_serve_classify_and_embed_agree_across_backends(checkpoint_and_images):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.apps.serve import create_app
    from clipforge.checkpoints import load_any
    from clipforge.transforms import Preprocess

    checkpoint, folder = checkpoint_and_images
    reference = load_any(checkpoint).eval()
    images = [path.read_bytes() for path in sorted(folder.rglob("*.jpg"))[:3]]
    answers = {}
    for backend in ("torch", "onnx", "auto"):
        app = create_app(use_backend(reference, backend), Preprocess(reference.config.preprocess))
        with TestClient(app) as client:
            assert client.get("/health").json()["backend"] == ("torch" if backend == "torch" else "onnx")
            upload = [{"image": ("x.jpg", data, "image/jpeg")} for data in images]
            embeddings = [client.post("/embed", files=f).json()["embedding"] for f in upload]
            probs = []
            for f in upload:
                ranked = client.post("/classify", files=f, data={"labels": "airplane,cat,ship"}).json()[
                    "labels"
                ]
                probs.append([p["prob"] for p in sorted(ranked, key=lambda p: p["label"])])
        answers[backend] = np.array(embeddings), np.array(probs)
    for backend in ("onnx", "auto"):
        for got, want in zip(answers[backend], answers["torch"], strict=True):
            np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
