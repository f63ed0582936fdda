"""optimize_for_inference: BN folding, channels-last and in-place rewriting keep outputs equal."""

import torch

from benchmarks.references import randomize_, sample_inputs
from clipforge.models import CLIP, get_config
from clipforge.models.inference import optimize_for_inference


def test_inference_copy_equals_model_and_inplace_equals_copy():
    model = randomize_(CLIP(get_config("tiny-resnet")), seed=0).eval()
    images, text = sample_inputs(model, batch=3)
    with torch.no_grad():
        expected_image, expected_text = model.encode_image(images), model.encode_text(text)
        copy = optimize_for_inference(model)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules())
        torch.testing.assert_close(copy.encode_image(images), expected_image, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(copy.encode_text(text), expected_text, atol=1e-6, rtol=1e-6)
        same = optimize_for_inference(model, inplace=True)
        assert same is model
        torch.testing.assert_close(same.encode_image(images), expected_image, atol=1e-5, rtol=1e-5)


def test_text_length_groups_equal_one_trimmed_batch():
    model = randomize_(CLIP(get_config("tiny-vit")), seed=1).eval()
    _, text = sample_inputs(model, batch=40, seed=2)
    with torch.no_grad():
        model.text.group_rows = 10**6  # one batch, trimmed to its longest text
        expected = model.encode_text(text)
        model.text.group_rows = 4  # several length groups
        grouped = model.encode_text(text)
    torch.testing.assert_close(grouped, expected, atol=1e-5, rtol=1e-4)  # GEMM blocking differs by rows


def test_vit_rewrites_keep_outputs():
    """Patch embedding as a GEMM and QuickGELU as a folded in-place SiLU: same features (fp32 rounding)."""
    from dataclasses import replace

    from clipforge.models.inference import PatchMatmul, ScaledSiLU

    config = replace(get_config("tiny-vit"), activation="quick_gelu")
    model = randomize_(CLIP(config), seed=3).eval()
    images, text = sample_inputs(model, batch=4, seed=4)
    with torch.no_grad():
        expected_image, expected_text = model.encode_image(images), model.encode_text(text)
        fast = optimize_for_inference(model)
        assert isinstance(fast.visual.patch_embed, PatchMatmul)
        assert all(isinstance(b.mlp.act, ScaledSiLU) for b in fast.text.transformer.blocks)
        torch.testing.assert_close(fast.encode_image(images), expected_image, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast.encode_text(text), expected_text, atol=1e-5, rtol=1e-5)
        gelu = randomize_(CLIP(get_config("tiny-vit")), seed=3).eval()  # GELU towers keep their activation
        assert not any(isinstance(m, ScaledSiLU) for m in optimize_for_inference(gelu).modules())
