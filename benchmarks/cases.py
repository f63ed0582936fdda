"""One benchmark case in a fresh process: `python -m benchmarks.cases CASE LIB WEIGHTS_DIR` -> one JSON line.

Fresh processes give each library a clean peak-RSS figure; all libraries load the same random weights
(written once by benchmarks.run into WEIGHTS_DIR in each library's own format)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
from pathlib import Path

import torch

from benchmarks.harness import peak_rss_mb, time_fn, timing_dict

SHARED = Path(
    os.environ.get("CLIPFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def coco_captions(n: int, seed: int = 0) -> list[str]:
    with open(SHARED / "coco_captions_mini" / "captions.csv", newline="") as f:
        captions = [row["caption"] for row in csv.DictReader(f)]
    rng = random.Random(seed)
    return [rng.choice(captions) for _ in range(n)]


def worst_case_texts(n: int) -> list[str]:
    return [" ".join(["photograph"] * 120)] * n  # truncated to 77 tokens


# --- model loading: each library from its own file format -------------------------------------------------


def load_model(lib: str, model_name: str, weights: Path):
    if lib.startswith("clipforge"):
        from clipforge.checkpoints import load_any
        from clipforge.models.inference import optimize_for_inference

        model = load_any(weights / f"{model_name}.safetensors").eval()
        return optimize_for_inference(model) if lib != "clipforge-train" else model
    if lib == "open_clip":
        import open_clip

        model = open_clip.create_model(
            f"{model_name}-quickgelu", pretrained=str(weights / f"{model_name}.openai.pt")
        )
        return model.eval()
    if lib == "transformers":
        from transformers import CLIPModel

        return CLIPModel.from_pretrained(weights / f"{model_name}-hf").eval()
    raise ValueError(f"unknown library {lib!r}")


def tokenize(lib: str, texts: list[str], weights: Path):
    if lib.startswith("clipforge"):
        import clipforge

        return clipforge.tokenize(texts, truncate=True)
    if lib == "open_clip":
        import open_clip

        return open_clip.tokenize(texts)
    from transformers import CLIPTokenizerFast

    tok = CLIPTokenizerFast.from_pretrained(weights / "hf-tokenizer")
    return tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")


def encode_image_fn(lib: str, model, images):
    if lib == "transformers":
        return lambda: model.get_image_features(pixel_values=images)
    if lib.startswith("clipforge"):
        images = images.contiguous(memory_format=torch.channels_last)
    return lambda: model.encode_image(images)


def encode_text_fn(lib: str, model, texts: list[str], weights: Path, batch_size: int):
    if lib.startswith("clipforge"):
        from clipforge.encode import encode_tokens

        tokens = tokenize(lib, texts, weights)
        return lambda: encode_tokens(model, tokens, batch_size=batch_size, normalize=False)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    if lib == "open_clip":
        tokens = [tokenize(lib, b, weights) for b in batches]
        return lambda: [model.encode_text(t) for t in tokens]
    encoded = [tokenize(lib, b, weights) for b in batches]
    return lambda: [model.get_text_features(**e) for e in encoded]


def train_step_fn(lib: str, model, images, texts: list[str], weights: Path):
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    tokens = tokenize(lib, texts, weights)
    labels = torch.arange(images.shape[0])

    def step():
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

    return step


def run_case(case: str, lib: str, weights: Path, repeats: int) -> dict:
    kind, model_name, batch = case.split(":")
    batch = int(batch)
    torch.manual_seed(0)
    if kind == "train":
        model = load_model(
            "clipforge-train" if lib.startswith("clipforge") else lib, model_name, weights
        ).train()
    else:
        model = load_model(lib, model_name, weights)
    size = json.loads((weights / f"{model_name}.json").read_text())["image_size"]
    images = torch.randn(batch, 3, size, size)
    if kind == "image":
        fn, items = encode_image_fn(lib, model, images), batch
    elif kind in ("text-coco", "text-77"):
        texts = coco_captions(batch) if kind == "text-coco" else worst_case_texts(batch)
        fn, items = encode_text_fn(lib, model, texts, weights, batch_size=256), batch
    elif kind == "train":
        fn, items = train_step_fn(lib, model, images, coco_captions(batch), weights), batch
    else:
        raise ValueError(f"unknown case kind {kind!r}")
    if kind == "train":
        timing = time_fn(fn, repeats=repeats, warmup=1)
    else:
        with torch.inference_mode():
            timing = time_fn(fn, repeats=repeats, warmup=1)
    return {"case": case, "lib": lib, **timing_dict(timing, items), "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case")
    parser.add_argument("lib")
    parser.add_argument("weights", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(run_case(args.case, args.lib, args.weights, args.repeats)))


if __name__ == "__main__":
    main()
