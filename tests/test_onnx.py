"""ONNX export: onnxruntime equals PyTorch (<= 1e-4) at several batch sizes; int8 keeps zero-shot accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import clipforge  # noqa: E402
from clipforge.apps.onnx_export import OnnxCLIP, export_towers, max_abs_diff  # noqa: E402


@pytest.mark.parametrize("preset", ["tiny-vit", "tiny-resnet"])
def test_onnx_towers_match_pytorch_with_dynamic_batch(preset, tmp_path):
    torch.manual_seed(0)
    model = clipforge.create_model(preset)
    paths = export_towers(model, tmp_path)
    assert model.text.trim_to_longest  # the caller's model is not changed by the export
    runtime = OnnxCLIP(paths["image"], paths["text"])
    size = model.config.preprocess.image_size
    texts = ["a", "a photo of a dog.", "x y z", "a much longer caption about a red bicycle by a wall", "cat"]
    for batch in (1, 3, 5):
        diff = max_abs_diff(
            model, runtime, torch.randn(batch, 3, size, size), clipforge.tokenize(texts[:batch])
        )
        assert diff["image"] <= 1e-4 and diff["text"] <= 1e-4, (batch, diff)
    info = json.loads(paths["info"].read_text())
    assert info["context_length"] == 77 and info["logit_scale"] == pytest.approx(
        model.logit_scale.exp().item()
    )


def test_export_cli_int8_reports_zero_shot_change(shared_data, tmp_path_factory, tmp_path):
    from test_apps_helpers import cached_tiny_clip

    from clipforge.checkpoints import save
    from clipforge.commands.export_onnx import main

    model = cached_tiny_clip(shared_data, tmp_path_factory.getbasetemp().parent)
    checkpoint = save(model, tmp_path / "tiny.pt")
    out = tmp_path / "onnx"
    result = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--int8",
            "--eval-data",
            str(shared_data / "cifar10"),
        ]
    )
    fp32, int8 = result["rows"]
    assert result["eval"]["images"] == 1000
    assert fp32["zeroshot_top1"] >= 0.2  # chance is 0.1
    assert abs(result["int8_top1_change"]) <= 0.05  # int8 weights cost at most 5 points
    assert int8["image_MB"] < fp32["image_MB"] / 2  # matmul weights really are int8
    assert max(result["max_abs_diff"].values()) <= 1e-4
    assert (out / "export_onnx.json").is_file() and (out / "export_onnx.md").is_file()


def test_text_graph_takes_any_length_up_to_the_context(tmp_path):
    """text.onnx has a dynamic length axis: a batch padded only to its longest text gives the same features."""
    torch.manual_seed(0)
    model = clipforge.create_model("tiny-vit")
    paths = export_towers(model, tmp_path)
    runtime = OnnxCLIP(paths["image"], paths["text"])
    tokens = clipforge.tokenize(["a photo of a dog.", "x", "a red bicycle leaning on a wall by the sea"])
    longest = int(tokens.argmax(dim=-1).max()) + 1
    with torch.no_grad():
        expected = model.encode_text(tokens).numpy()
    for length in (longest, longest + 3, 77):
        assert abs(runtime.encode_text(tokens[:, :length]) - expected).max() <= 1e-5, length


def test_hf_text_tower_exports_with_its_own_tokenizer_and_any_length(tmp_path):
    """A timm + transformers checkpoint (today's demo preset): both towers export (the probes use the model's
    own tokenizer, not CLIP's BPE), and the BERT graph keeps a dynamic length (no trimmed length baked in)."""
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    from clipforge.tokenizer import tokenizer_for

    torch.manual_seed(0)
    model = clipforge.create_model("lite0-minilm-space").eval()
    paths = export_towers(model, tmp_path)
    runtime = OnnxCLIP(paths["image"], paths["text"])
    tokens = tokenizer_for(model)(["a photo of a dog.", "x", "a red bicycle leaning on a wall by the sea"])
    assert tokens.max() < model.text.token_embedding.num_embeddings  # BERT ids, not CLIP BPE ids
    longest = int((tokens != model.text.pad_token_id).sum(dim=1).max())
    with torch.no_grad():
        expected = model.encode_text(tokens).numpy()
    for length in (longest, longest + 3, tokens.shape[1]):
        assert abs(runtime.encode_text(tokens[:, :length]) - expected).max() <= 1e-4, length


def test_static_int8_is_calibrated_and_close(tmp_path):
    """Static int8: QDQ nodes around the weight-carrying convs/matmuls only; features stay close to fp32."""
    import onnx

    from clipforge.apps.onnx_export import quantize_int8, weight_nodes

    torch.manual_seed(0)
    model = clipforge.create_model("tiny-resnet").eval()
    paths = export_towers(model, tmp_path)
    size = model.config.preprocess.image_size
    images = torch.rand(24, 3, size, size) * 2 - 1
    int8 = quantize_int8(paths["image"], calibration=list(images[:16].split(8)))
    graph = onnx.load(str(int8)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= len(weight_nodes(paths["image"])) > 0
    fp32, q = OnnxCLIP(paths["image"], paths["text"]), OnnxCLIP(int8, paths["text"])
    a, b = fp32.encode_image(images[16:]), q.encode_image(images[16:])
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.98, cosine


def test_static_int8_keeps_the_first_weight_nodes_fp32(tmp_path):
    """`float_nodes=k`: the first k weight nodes (graph order) read their float weights directly; the rest
    read int8 weights through DequantizeLinear."""
    import onnx

    from clipforge.apps.onnx_export import quantize_int8, weight_nodes

    torch.manual_seed(0)
    model = clipforge.create_model("tiny-resnet").eval()
    path = export_towers(model, tmp_path)["image"]
    images = torch.rand(16, 3, model.config.preprocess.image_size, model.config.preprocess.image_size) * 2 - 1
    names = weight_nodes(path)
    int8 = quantize_int8(path, tmp_path / "k2.onnx", list(images.split(8)), float_nodes=2)
    graph = onnx.load(str(int8)).graph
    floats = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    producer = {out: node.op_type for node in graph.node for out in node.output}
    by_name = {node.name: node for node in graph.node}
    weight_is_float = [by_name[name].input[1] in floats for name in names]
    assert weight_is_float[:2] == [True, True] and not any(weight_is_float[2:])
    assert all(producer[by_name[name].input[1]] == "DequantizeLinear" for name in names[2:])


def test_static_int8_takes_relu6_ranges(tmp_path):
    """A ReLU6 after a conv with one outlier channel (BN folding makes them: EfficientNet-Lite's stem spans
    [-46, 87]): the quantised conv output must take the activation's [0, 6] range, not the conv's raw one
    (with the raw range the features below have cosine 0.68 to fp32; EfficientNet-Lite0's had 0.57)."""
    import onnx
    import onnxruntime as ort

    from clipforge.apps.onnx_export import activation_nodes, quantize_int8, session_options, weight_nodes

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2),
        torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 8, 1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
    ).eval()
    with torch.no_grad():
        net[0].weight[0].mul_(300.0)  # one channel's pre-activations ~ +-100, the rest inside [0, 6]
        net[0].bias.add_(1.0)
    images = torch.rand(40, 3, 32, 32) * 2 - 1
    path = tmp_path / "net.onnx"
    torch.onnx.export(
        net, images[:1], path, input_names=["images"], dynamic_axes={"images": {0: "batch"}}, dynamo=False
    )
    assert len(activation_nodes(onnx.load(str(path)).graph, weight_nodes(path))) == 2  # the Clip and the Relu
    int8 = quantize_int8(path, calibration=list(images[:24].split(8)))
    assert "Clip" not in [n.op_type for n in onnx.load(str(int8)).graph.node]  # folded into the range
    session = ort.InferenceSession(str(int8), session_options(1), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": images[24:].numpy()})[0])
    with torch.no_grad():
        want = net(images[24:])
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.99
