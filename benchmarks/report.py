"""The issue's targets checked against one `make bench` report, and its Markdown summary."""

from __future__ import annotations

from typing import Any

from clipforge.results import markdown_table

COLUMNS = [
    "case",
    "lib",
    "items_per_s",
    "min_s",
    "max_s",
    "repeats",
    "peak_rss_mb",
    "clipforge_speedup",
    "max_abs_diff",
    "gflops_per_s",
    "fraction_of_peak",
    "local_peak_gflops",
]


TOKENIZER_NOTE = (
    "Corpora and columns as in benchmarks/results/tokenizer.md (`python -m benchmarks.tokenizer_bench`): "
    "COCO = all 25,014 COCO val2017 captions; accents / cjk / emoji / long = seeded rewrites of them. "
    "cold = a fresh tokenizer object's first pass, rounds interleaved in one process; cold_process = the "
    "same in a fresh Python process per library. transformers runs no ftfy.\n\n"
)


def _row(report: dict, case: str, lib: str) -> dict | None:
    return next((r for r in report["rows"] if r["case"] == case and r["lib"] == lib), None)


def _target(name: str, value: float | None, goal: float, detail: str = "") -> dict[str, Any]:
    met = value is not None and value >= goal
    shown = None if value is None else round(value, 3)
    return {"target": name, "measured": shown, "goal": f">= {goal}", "met": met, "detail": detail}


def targets(report: dict) -> list[dict[str, Any]]:
    """Issue #7's ratio targets (only those whose cases ran)."""
    out: list[dict[str, Any]] = []
    speedups = [
        ("text-coco:ViT-B-32:256", "open_clip", 3.0, "text on real captions vs open_clip"),
        (
            "text-coco:ViT-B-32:256",
            "transformers",
            3.0,
            "text on real captions vs transformers (pad longest)",
        ),
        (
            "text-coco:ViT-B-32:256",
            "transformers-max77",
            3.0,
            "text on real captions vs transformers (pad 77)",
        ),
        ("train:ViT-B-32:16", "open_clip", 1.3, "training step ViT-B/32 vs open_clip"),
        ("train:demo-cifar:512", "open_clip", 1.3, "training step demo-cifar vs open_clip"),
        ("image:RN50:32", "open_clip", 1.2, "RN50 image encoding vs open_clip"),
        ("image:ViT-B-32:32", "open_clip", 1.0, "ViT-B/32 image encoding vs open_clip"),
    ]
    for case, lib, goal, name in speedups:
        row = _row(report, case, lib)
        if row:
            out.append(
                _target(name, row["clipforge_speedup"], goal, f"{case}, max_abs_diff {row['max_abs_diff']}")
            )
        auto = _row(report, case, AUTO)
        if row and auto and case.startswith("text"):  # the product's text path (apps' --backend auto)
            detail = f"{case}, {AUTO} max_abs_diff {auto['max_abs_diff']}"
            out.append(_target(f"{name}: product default (auto)", _ratio(auto, row), goal, detail))
    out += runtime_targets(report)
    vit = _row(report, "image:ViT-B-32:32", "clipforge")
    if vit:
        out.append(_target("ViT-B/32 image FLOP/s / matmul peak", vit["fraction_of_peak"], 0.85, "batch 32"))
    out += tokenizer_targets(report["pipeline"]["tokenizer"])
    demo = _row(report, "train:demo-cifar:512", "clipforge")
    if demo:
        supply = report["pipeline"]["loader"]["images_per_s"]
        detail = f"loader {supply} img/s vs demo step {demo['items_per_s']} img/s"
        out.append(_target("data loading / demo consumption", supply / demo["items_per_s"], 2.0, detail))
    worst = None
    for row in report["rows"]:
        ref = _row(report, row["case"], "open_clip")
        if row["lib"] == "clipforge" and ref:
            ratio = ref["peak_rss_mb"] / row["peak_rss_mb"]
            if worst is None or ratio < worst[0]:
                worst = (ratio, row["case"])
    if worst:
        out.append(_target("peak RSS: open_clip / clipforge (worst case)", worst[0], 1.0, worst[1]))
    return out


RUNTIME_CASES = [
    "image:ViT-B-32:1", "image:ViT-B-32:32", "image:RN50:1", "image:RN50:32",
    "text-coco:ViT-B-32:1", "text-coco:ViT-B-32:32", "text-coco:ViT-B-32:256",
]  # fmt: skip
AUTO = "clipforge-auto"  # the apps' default path (benchmarks.cases)


def _ratio(row: dict, base: dict) -> float:
    return row["items_per_s"] / base["items_per_s"]


def runtime_targets(report: dict) -> list[dict[str, Any]]:
    """The product's default path (`clipforge-auto`; eager PyTorch where that row did not run) >= ONNX
    Runtime fp32, and int8 >= 2x fp32 (same runtime, and vs the product's fp32 default)."""
    out = []
    for case in RUNTIME_CASES:
        ort = _row(report, case, "ort-fp32")
        default = _row(report, case, AUTO) or _row(report, case, "clipforge")
        if ort is None or default is None:
            continue
        detail = f"{case}, max_abs_diff {default['max_abs_diff']}"
        name = "product default (auto)" if default["lib"] == AUTO else "clipforge eager"
        out.append(_target(f"{name} vs ONNX Runtime fp32 ({case})", _ratio(default, ort), 1.0, detail))
        if not case.startswith("image"):
            continue
        for lib, fp32 in (
            ("ort-int8", "ort-fp32"),
            ("openvino-int8", "openvino-fp32"),
            ("openvino-int8", AUTO),
        ):
            int8, base = _row(report, case, lib), _row(report, case, fp32)
            if int8 and base:
                out.append(_target(f"{lib} vs {fp32} ({case})", _ratio(int8, base), 2.0, f"{case}"))
    return out


TOKENIZER_GOALS = (  # (library, cold goal, warm goal) on the COCO captions, ids identical to open_clip's
    ("open_clip.tokenize", 10.0, 5.0),
    ("transformers CLIPTokenizerFast", 3.0, 2.0),
)


def tokenizer_targets(rows: list[dict]) -> list[dict[str, Any]]:
    """Cold and warm tokenizer speed-ups on COCO (in-process rounds; the fresh-process figure in detail)."""
    out = []
    coco = {r["library"]: r for r in rows if r["corpus"] == "coco"}
    identical = coco.get("clipforge", {}).get("rows_identical_to_open_clip", "")
    for lib, cold_goal, warm_goal in TOKENIZER_GOALS:
        if lib not in coco:
            continue
        row = coco[lib]
        process = row.get("cold_process_speedup")
        detail = f"clipforge ids identical {identical}; fresh process {process}x"
        out.append(_target(f"cold tokenizer vs {lib}", row["cold_speedup"], cold_goal, detail))
        out.append(_target(f"warm tokenizer vs {lib}", row["warm_speedup"], warm_goal, f"ids {identical}"))
    return out


def _settings(report: dict) -> str:
    settings = report.get("peer_settings")
    if not settings:
        return ""
    lines = [f"- **{name}**: {value}" for name, value in settings.items()]
    return "## Peer settings (ONNX Runtime, OpenVINO)\n\n" + "\n".join(lines) + "\n\n"


def summary_markdown(report: dict) -> str:
    peak = report["matmul_peak"]
    pipeline = report["pipeline"]
    preprocess = [{"library": k, **v} for k, v in pipeline["preprocess"]["libraries"].items()]
    return (
        "# clipforge benchmarks\n\n"
        f"Machine: {report['machine']}\n\n"
        f"fp32 matmul peak: {peak['best_gflops']} GFLOP/s (best of repeats over sizes "
        f"{list(peak['per_size_best_gflops'])}, measured at the start ({peak['peak_gflops']}) and the end "
        f"({peak['peak_gflops_at_end']}) of the run); a bf16 matmul takes {report['bf16_over_fp32_time_ratio']}x "
        "the fp32 time here, so everything runs in fp32.\n\n"
        "## Targets\n\n"
        + markdown_table(report["targets"], floatfmt=".3f")
        + "\n"
        + _settings(report)
        + "## Model cases\n\n"
        "`items_per_s` from the median of `repeats` timed calls (after a warm-up) with all libraries loaded in "
        "one process and called in rotating order (A B C, B C A, ...), so a change in the shared host's speed "
        "lands on all alike; `peak_rss_mb` from one more call with the library alone in a fresh process (JSON: "
        "`alone_items_per_s`, a single noisy sample). `clipforge_speedup` = clipforge items/s / that library's; "
        "`max_abs_diff` = largest difference of its outputs from clipforge's (features; for training, the "
        "loss of every step); `gflops_per_s` = full-model forward FLOPs x items / `min_s` and "
        "`fraction_of_peak` = that / the best matmul peak seen in the run (best-of-repeats on both sides; "
        "`local_peak_gflops` is measured in the timing process right after the timing). Text: every "
        "library encodes in batches of 128 pre-tokenised texts; open_clip pads to 77 tokens, `transformers` "
        "pads to the longest text of each batch (its default with `padding=True`), `transformers-max77` pads "
        "to 77; clipforge packs texts that share a prefix into prefix trees computed once per node "
        "(`clipforge.models.prefix`; exact: attention is causal, each node attends to its own prefix) and "
        "restores the order.\n\n"
        + markdown_table(report["rows"], COLUMNS, floatfmt=".3f")
        + "\n## Tokenizer (1 thread; cold = a fresh tokenizer's first pass, warm = caches full)\n\n"
        + TOKENIZER_NOTE
        + markdown_table(pipeline["tokenizer"])
        + f"\n## JPEG -> tensor ({pipeline['preprocess']['images']} COCO photos, 224 px)\n\n"
        + markdown_table(preprocess)
        + f"\n## Demo loader\n\n`labelled_loader` on CIFAR-10 (batch {pipeline['loader']['batch_size']}, "
        f"augmentation on): {pipeline['loader']['images_per_s']} images/s.\n"
    )
