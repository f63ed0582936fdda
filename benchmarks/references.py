"""Reference models and exact-parity checks of the converters against open_clip and transformers.

Used by the tests (test_parity.py, test_checkpoints*.py, ...) and benchmarks (parity_report.py, weights.py).
It lives outside the installed package because it needs open_clip (and transformers for the HF side),
which the library itself never imports.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clipforge.checkpoints.io import model_from_state
from clipforge.checkpoints.openai import infer_config, openai_to_clipforge
from clipforge.models import CLIP, get_config


@torch.no_grad()
def randomize_(model: nn.Module, seed: int, scale: float = 0.02) -> nn.Module:
    """Perturb every parameter and give BatchNorm random running statistics, so that no tensor
    keeps a symmetric init (ones, zeros) that would hide a wrong mapping."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(scale * torch.randn(param.shape, generator=generator))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model


def random_open_clip(name: str, seed: int = 0) -> nn.Module:
    """open_clip's model `name` (its own naming: `X` GELU, `X-quickgelu`) with random weights and BN
    statistics, fp32, eval mode."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, device="cpu")
    return randomize_(model.float().eval(), seed)


def clipforge_from_open_clip(open_clip_model: nn.Module, name: str | None = None) -> CLIP:
    """The same weights in clipforge: architecture from `name`, else from the shapes (QuickGELU assumed)."""
    state_dict = open_clip_model.state_dict()
    config = get_config(name) if name else infer_config(state_dict, "quick_gelu")
    return model_from_state(config, openai_to_clipforge(state_dict), "<open_clip model>").float()


def sample_inputs(model: CLIP, batch: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random images and token ids with EOT (the largest id) at varied lengths, zero padding."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    size = config.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=generator)
    vocab, length = config.text.vocab_size, config.text.context_length
    text = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        n = int(torch.randint(2, length - 1, (1,), generator=generator))
        text[row, 0] = vocab - 2  # start-of-text
        text[row, 1:n] = torch.randint(1, vocab - 2, (n - 1,), generator=generator)
        text[row, n] = vocab - 1  # end-of-text
    return images, text


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def compare_open_clip(ours: CLIP, theirs: nn.Module, images: Tensor, text: Tensor) -> dict[str, float]:
    return {
        "image": max_abs_diff(ours.encode_image(images), theirs.encode_image(images)),
        "text": max_abs_diff(ours.encode_text(text), theirs.encode_text(text)),
    }


@torch.no_grad()
def compare_hf(ours: CLIP, hf_model: nn.Module, images: Tensor, text: Tensor) -> dict[str, float]:
    image_hf = hf_model.get_image_features(pixel_values=images).pooler_output
    text_hf = hf_model.get_text_features(input_ids=text).pooler_output
    return {
        "image": max_abs_diff(ours.encode_image(images), image_hf),
        "text": max_abs_diff(ours.encode_text(text), text_hf),
    }


def load_hf_reference(directory) -> nn.Module:
    """transformers.CLIPModel from a directory written by `save_hf`, offline, fp32, eval."""
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(str(directory), local_files_only=True).float().eval()


# Small OpenAI-layout architectures (64-dim heads, as OpenAI's shape inference assumes).
TINY_OPENAI = {
    "vit": dict(image_size=32, layers=2, width=128, patch_size=8),
    "resnet": dict(image_size=64, layers=(1, 1, 1, 1), width=16),
}
TINY_OPENAI_TEXT = dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2)


def tiny_open_clip(kind: str, seed: int = 0) -> nn.Module:
    """A small random open_clip CLIP (QuickGELU) in OpenAI's layout: fixtures for the converters."""
    from open_clip.model import CLIP as OpenCLIP

    torch.manual_seed(seed)
    model = OpenCLIP(32, TINY_OPENAI[kind], TINY_OPENAI_TEXT, quick_gelu=True)
    return randomize_(model.eval(), seed)


def trace_open_clip(model: nn.Module, path) -> None:
    """Save `model` as a TorchScript archive the way OpenAI's released files were made (traced)."""
    import warnings

    size = (
        model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    )
    images = torch.zeros(1, 3, size, size)
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, 0], text[0, 1] = 49406, 49407
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, (images, text), check_trace=False).save(str(path))
