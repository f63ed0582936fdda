"""One benchmark case in a fresh process: `python -m benchmarks.cases CASE LIB WEIGHTS_DIR` -> one JSON line.

Fresh processes give each library a clean peak-RSS figure; all libraries load the same random weights
(written once by benchmarks.weights into WEIGHTS_DIR in each library's own format). With `--save PATH` the
case's outputs (features, or the training losses) are saved so that benchmarks.run can check they are equal.

CASE = kind:model:batch, kind one of image, text-coco, text-77, train. LIB = clipforge, open_clip,
transformers (text: padding to the longest in each batch, its default with padding=True),
transformers-max77 (padding="max_length", like open_clip and OpenAI), clipforge-auto (the model the apps
run by default: apps.backend.use_backend(model, "auto"), e.g. both towers on OpenVINO), or a runtime on clipforge's exported
ONNX graphs (benchmarks.onnx_peers: ort-fp32, ort-int8, openvino-fp32, openvino-int8; texts padded to the
longest in each batch)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.harness import Timing, matmul_peak_gflops, peak_rss_mb, time_fn, timing_dict
from benchmarks.onnx_peers import PEERS, Peer

SHARED = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
TEXT_BATCH = 128  # every library encodes texts in batches of this many


def coco_captions(n: int, seed: int = 0) -> list[str]:
    with open(SHARED / "coco_captions_mini" / "captions.csv", newline="") as f:
        captions = [row["caption"] for row in csv.DictReader(f)]
    rng = random.Random(seed)
    return [rng.choice(captions) for _ in range(n)]


def worst_case_texts(n: int, seed: int = 0) -> list[str]:
    """n distinct texts of 120 words from the captions, truncated to 77 tokens: every position is computed
    (distinct texts, so shared-prefix packing cannot dedupe them beyond a word or two)."""
    words = sorted({w for c in coco_captions(2000, seed) for w in c.lower().split() if w.isalpha()})
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(120)) for _ in range(n)]


def template_captions(n: int, seed: int = 0) -> list[str]:
    """The demo's training captions: CIFAR-10 class names in prompt templates."""
    from clipforge.data import DEFAULT_TEMPLATES

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rng = random.Random(seed)
    return [rng.choice(DEFAULT_TEMPLATES).format(rng.choice(classes)) for _ in range(n)]


# --- model loading: each library from its own file format -------------------------------------------------


def load_model(lib: str, model_name: str, weights: Path, inference: bool, image_shape=None):
    meta = json.loads((weights / f"{model_name}.json").read_text())
    if lib in PEERS:  # exported by benchmarks.run (prepare_onnx) before the cases
        return Peer(lib, weights / f"{model_name}-onnx", torch.get_num_threads(), image_shape)
    if lib == "clipforge":
        from clipforge.checkpoints import load_any
        from clipforge.models.inference import optimize_for_inference

        model = load_any(weights / f"{model_name}.safetensors")
        return optimize_for_inference(model, inplace=True) if inference else model.train()
    if lib == "clipforge-auto":  # what classify / embed / serve run by default (apps.backend)
        from clipforge.apps.backend import use_backend
        from clipforge.checkpoints import load_any

        return use_backend(load_any(weights / f"{model_name}.safetensors").eval(), "auto")
    if lib == "open_clip":
        import open_clip

        if meta.get("open_clip_cfg"):  # not an open_clip preset (the demo): same architecture from its config
            model = open_clip.CLIP(**meta["open_clip_cfg"])
            missing, unexpected = model.load_state_dict(torch.load(weights / f"{model_name}.openai.pt"))
            if missing or unexpected:
                raise RuntimeError(f"open_clip {model_name}: missing {missing}, unexpected {unexpected}")
        else:
            model = open_clip.create_model(
                f"{model_name}-quickgelu", pretrained=str(weights / f"{model_name}.openai.pt")
            )
        return model.eval() if inference else model.train()
    if lib.startswith("transformers"):
        from transformers import CLIPModel

        model = CLIPModel.from_pretrained(weights / f"{model_name}-hf")
        return model.eval() if inference else model.train()
    raise ValueError(
        f"unknown library {lib!r}; valid: clipforge, clipforge-auto, open_clip, transformers, transformers-max77, "
        + ", ".join(PEERS)
    )


def tokenize(lib: str, texts: list[str], weights: Path, context_length: int = 77):
    if lib.startswith("clipforge"):
        import clipforge

        return clipforge.tokenize(texts, context_length=context_length, truncate=True)
    if lib == "open_clip":
        import open_clip

        return open_clip.tokenize(texts, context_length=context_length)
    from transformers import CLIPTokenizerFast

    tok = CLIPTokenizerFast.from_pretrained(weights / "hf-tokenizer")
    padding = "max_length" if lib == "transformers-max77" else True  # True = longest in the batch
    return tok(texts, padding=padding, truncation=True, max_length=context_length, return_tensors="pt")


def _features(out) -> Tensor:
    return out if isinstance(out, Tensor) else out.pooler_output  # transformers 5 returns a model output


def encode_image_fn(lib: str, model, images: Tensor):
    if lib.startswith("transformers"):
        return lambda: _features(model.get_image_features(pixel_values=images))
    return lambda: model.encode_image(
        images
    )  # clipforge's ResNet converts to its channels-last layout itself


def encode_text_fn(lib: str, model, texts: list[str], weights: Path):
    """(full run, warm-up on the first batch only): each library in batches of TEXT_BATCH texts."""
    if lib.startswith("clipforge"):  # eager, or the apps' default backend: the same bulk encoding
        from clipforge.encode import encode_tokens

        tokens = tokenize(lib, texts, weights)
        return (
            lambda: encode_tokens(model, tokens, batch_size=TEXT_BATCH, normalize=False),
            lambda: encode_tokens(model, tokens[:TEXT_BATCH], batch_size=TEXT_BATCH, normalize=False),
        )
    if lib in PEERS:  # clipforge's ids (= open_clip's), each batch padded to its longest text
        encoded = list(tokenize("clipforge", texts, weights).split(TEXT_BATCH))
        return lambda: torch.cat([model.encode_text(t) for t in encoded]), lambda: model.encode_text(
            encoded[0]
        )
    batches = [texts[i : i + TEXT_BATCH] for i in range(0, len(texts), TEXT_BATCH)]
    encoded = [tokenize(lib, b, weights) for b in batches]
    if lib == "open_clip":
        run = lambda: torch.cat([model.encode_text(t) for t in encoded])  # noqa: E731
        return run, lambda: model.encode_text(encoded[0])
    run = lambda: torch.cat([_features(model.get_text_features(**e)) for e in encoded])  # noqa: E731
    return run, lambda: model.get_text_features(**encoded[0])


def train_step_fn(lib: str, model, images: Tensor, texts: list[str], weights: Path, context_length: int):
    """One AdamW step of the symmetric contrastive loss; returns the loss before the update."""
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]
    if lib == "clipforge":  # as clipforge's trainer runs it: NHWC ResNet on CPU, fused AdamW (same math)
        from clipforge.train.loop import use_fast_layout

        use_fast_layout(model, images.device)
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    else:  # as open_clip's trainer runs it
        optimizer = torch.optim.AdamW(params, lr=1e-5)
    tokens = tokenize(lib, texts, weights, context_length)
    labels = torch.arange(images.shape[0])

    def step() -> float:
        if lib == "open_clip":
            image_f, text_f, scale = model(images, tokens)[:3]
        else:
            out = model(images, tokens)
            image_f, text_f, scale = out.image_features, out.text_features, out.logit_scale
        logits = scale * image_f @ text_f.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


@dataclass
class Built:
    """One library's callable for a case: `call()` appends its output to `outputs`."""

    call: Callable[[], None]
    warmup: Callable[[], object] | None
    outputs: list
    batch: int
    kind: str


def build(case: str, lib: str, weights: Path) -> Built:
    kind, model_name, batch = case.split(":")
    batch = int(batch)
    meta = json.loads((weights / f"{model_name}.json").read_text())
    image_shape = (batch, 3, meta["image_size"], meta["image_size"])
    model = load_model(lib, model_name, weights, kind != "train", image_shape if kind == "image" else None)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(*image_shape, generator=generator)
    outputs: list = []
    warmup_fn = None
    if kind == "image":
        fn = encode_image_fn(lib, model, images)
    elif kind in ("text-coco", "text-77"):
        texts = coco_captions(batch) if kind == "text-coco" else worst_case_texts(batch)
        fn, warmup_fn = encode_text_fn(lib, model, texts, weights)
    elif kind == "train":
        texts = coco_captions(batch) if meta["context_length"] == 77 else template_captions(batch)
        fn = train_step_fn(lib, model, images, texts, weights, meta["context_length"])
    else:
        raise ValueError(f"case {case!r}: kind must be image, text-coco, text-77 or train")
    return Built(lambda: outputs.append(fn()), warmup_fn, outputs, batch, kind)


def _mode(kind: str):
    return contextlib.nullcontext() if kind == "train" else torch.inference_mode()


def run_case(case: str, lib: str, weights: Path, repeats: int, save: Path | None = None) -> dict:
    """One library alone in this process: timing, peak RSS, outputs saved for the equality check."""
    built = build(case, lib, weights)
    with _mode(built.kind):
        timing = time_fn(built.call, repeats=repeats, warmup=1, warmup_fn=built.warmup)
    if save is not None:  # features of the first timed call; the loss of every step for training
        outputs = built.outputs
        torch.save(torch.tensor(outputs) if built.kind == "train" else outputs[0].detach().float(), save)
    return {
        "case": case,
        "lib": lib,
        "threads": torch.get_num_threads(),
        **timing_dict(timing, built.batch),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_interleaved(case: str, libs: list[str], weights: Path, repeats: int) -> list[dict]:
    """All libraries in this one process, timed call by call in rotating order (A B C, B C A, ...): a change
    in the host's speed lands on every library alike, so the ratios hold even when absolute figures drift."""
    built = {lib: build(case, lib, weights) for lib in libs}
    times: dict[str, list[float]] = {lib: [] for lib in libs}
    kind = built[libs[0]].kind
    with _mode(kind):
        for lib in libs:
            (built[lib].warmup or built[lib].call)()
        for r in range(repeats):
            for lib in libs[r % len(libs) :] + libs[: r % len(libs)]:
                start = time.perf_counter()
                built[lib].call()
                times[lib].append(time.perf_counter() - start)
                built[lib].outputs.clear()
    rows = [
        {"case": case, "lib": lib, "threads": torch.get_num_threads(),
         **timing_dict(Timing.of(times[lib]), built[lib].batch)}
        for lib in libs
    ]  # fmt: skip
    if kind == "image":  # the matmul peak in the same process, right after the timing
        peak = matmul_peak_gflops(repeats=5)["peak_gflops"]
        for row in rows:
            row["local_peak_gflops"] = peak
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case")
    parser.add_argument(
        "lib", help="a library, or several joined by commas: timed interleaved in one process"
    )
    parser.add_argument("weights", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "," in args.lib:
        print(json.dumps(run_interleaved(args.case, args.lib.split(","), args.weights, args.repeats)))
    else:
        print(json.dumps(run_case(args.case, args.lib, args.weights, args.repeats, args.save)))


if __name__ == "__main__":
    main()
