"""Tokenizer throughput, cold and warm: clipforge vs open_clip.tokenize vs transformers' CLIPTokenizerFast.

Corpora (`benchmarks.text_corpora`): the 25,014 COCO val2017 captions, and seeded non-ASCII (accents, CJK,
emoji) and long (10-caption paragraph) variants of them. Each library turns a corpus, in batches of
--batch-size, into (N, 77) int64 rows; ids are checked identical to open_clip's (HF pads with EOT instead of
0, so its padding is masked out before comparing; HF runs no ftfy, so it may differ where ftfy repairs).

- cold: a fresh tokenizer object (built untimed: vocabulary loaded, no word ever seen) makes the first pass
  over the corpus; rounds interleaved across libraries in one process (the ratios). `cold_process`: the
  same once more in a fresh Python process per library, which also times import + construction (`load_s`).
- warm: one tokenizer per library, after a first pass (caches full), rounds interleaved.
Rates come from the median round. Writes benchmarks/results/tokenizer.json and .md.

    .venv/bin/python -m benchmarks.tokenizer_bench [--smoke] [--rounds 3]   (~8 min on 2 loaded cores)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.harness import machine_info, publish
from benchmarks.text_corpora import CORPORA, corpus
from clipforge.results import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARIES = ("clipforge", "open_clip.tokenize", "transformers CLIPTokenizerFast")
Encode = Callable[[list[str]], torch.Tensor]


def make_tokenizer(lib: str, hf_dir: Path) -> Encode:
    """A fresh tokenizer of `lib` (empty caches): texts -> (N, 77) int64 rows, zero-padded."""
    if lib == "clipforge":
        from clipforge.tokenizer import Tokenizer

        tok = Tokenizer()
        return lambda texts: tok(texts, truncate=True)
    if lib == "open_clip.tokenize":
        from open_clip.tokenizer import SimpleTokenizer  # what open_clip.tokenize calls, with its own cache

        simple = SimpleTokenizer()
        return lambda texts: simple(texts, context_length=77)
    if lib == "transformers CLIPTokenizerFast":
        from transformers import CLIPTokenizerFast

        from clipforge.tokenizer import write_hf_tokenizer_files

        if not (hf_dir / "vocab.json").exists():
            write_hf_tokenizer_files(hf_dir)
        hf = CLIPTokenizerFast.from_pretrained(hf_dir)

        def hf_rows(texts: list[str]) -> torch.Tensor:
            out = hf(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            return out["input_ids"] * out["attention_mask"]  # zero padding, as OpenAI

        return hf_rows
    raise ValueError(f"unknown library {lib!r}; valid: {', '.join(LIBRARIES)}")


def batched(fn: Encode, texts: list[str], batch_size: int) -> torch.Tensor:
    return torch.cat([fn(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])


def _timed(fn: Encode, texts: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    batched(fn, texts, batch_size)
    return time.perf_counter() - start


def run_corpus(name: str, texts: list[str], hf_dir: Path, batch_size: int, rounds: int) -> list[dict]:
    """Cold and warm rates of every library on one corpus, rounds interleaved (rotating order)."""
    libs = list(LIBRARIES)
    warm = {lib: make_tokenizer(lib, hf_dir) for lib in libs}
    reference = batched(warm["open_clip.tokenize"], texts, batch_size)
    identical = {}
    for lib in libs:  # the warm-up pass (fills the caches) also checks the ids
        ids = batched(warm[lib], texts, batch_size)
        identical[lib] = f"{int((ids == reference).all(dim=1).sum())}/{len(texts)}"
    cold_s: dict[str, list[float]] = {lib: [] for lib in libs}
    warm_s: dict[str, list[float]] = {lib: [] for lib in libs}
    for r in tqdm(range(rounds), desc=f"{name}: rounds", leave=False):
        for lib in libs[r % len(libs) :] + libs[: r % len(libs)]:
            cold_s[lib].append(_timed(make_tokenizer(lib, hf_dir), texts, batch_size))
            warm_s[lib].append(_timed(warm[lib], texts, batch_size))
    cold = {lib: len(texts) / statistics.median(ts) for lib, ts in cold_s.items()}
    hot = {lib: len(texts) / statistics.median(ts) for lib, ts in warm_s.items()}
    return [
        {
            "corpus": name,
            "texts": len(texts),
            "library": lib,
            "cold_texts_per_s": round(cold[lib]),
            "warm_texts_per_s": round(hot[lib]),
            "cold_speedup": round(cold["clipforge"] / cold[lib], 2),
            "warm_speedup": round(hot["clipforge"] / hot[lib], 2),
            "rows_identical_to_open_clip": identical[lib],
        }
        for lib in libs
    ]


def cold_process(lib: str, name: str, limit: int | None, batch_size: int, hf_dir: Path) -> dict:
    """One fresh `python -m benchmarks.tokenizer_bench --cold-process` run: load_s and the first pass."""
    args = ["--cold-process", lib, name, "--batch-size", str(batch_size), "--hf-dir", str(hf_dir)]
    args += ["--limit", str(limit)] if limit else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.tokenizer_bench", *args], env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(f"cold process {lib} {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cold_process_main(lib: str, name: str, limit: int | None, batch_size: int, hf_dir: Path) -> None:
    texts = corpus(name, limit)  # read before the clock starts: only the library's own work is timed
    start = time.perf_counter()
    fn = make_tokenizer(lib, hf_dir)  # imports the library too: this process has not yet
    load_s = time.perf_counter() - start
    first_pass_s = _timed(fn, texts, batch_size)
    print(json.dumps({"load_s": round(load_s, 3), "texts_per_s": round(len(texts) / first_pass_s)}))


def add_cold_process(rows: list[dict], limit: int | None, batch_size: int, hf_dir: Path) -> None:
    """Fresh-process cold rates, libraries in rotating order per corpus; speed-ups vs clipforge's."""
    names = sorted({row["corpus"] for row in rows}, key=list(CORPORA).index)
    libs = list(LIBRARIES)
    for i, name in enumerate(tqdm(names, desc="cold processes", leave=False)):
        runs = {
            lib: cold_process(lib, name, limit, batch_size, hf_dir) for lib in libs[i % 3 :] + libs[: i % 3]
        }
        for row in rows:
            if row["corpus"] == name:
                run = runs[row["library"]]
                row["cold_process_texts_per_s"] = run["texts_per_s"]
                row["cold_process_speedup"] = round(runs["clipforge"]["texts_per_s"] / run["texts_per_s"], 2)
                row["load_s"] = run["load_s"]


def benchmark(limits: dict[str, int | None], batch_size: int, rounds: int) -> list[dict]:
    """Every corpus: interleaved cold/warm rows, then the fresh-process cold rates."""
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp)
        for name, limit in tqdm(limits.items(), desc="tokenizer corpora"):
            rows += run_corpus(name, corpus(name, limit), hf_dir, batch_size, rounds)
        for name, limit in limits.items():
            add_cold_process([r for r in rows if r["corpus"] == name], limit, batch_size, hf_dir)
    return rows


SUMMARY = (
    "# Tokenizer throughput, cold and warm\n\n"
    "Texts in batches of {batch_size} -> (N, 77) int64, 1 thread, median of {rounds} interleaved rounds. "
    "**cold**: a fresh tokenizer object (built untimed) makes the first pass over the corpus, i.e. every "
    "word is new to it; **cold_process**: the same in a fresh Python process per library (`load_s` = its "
    "import + construction, not in the rate); **warm**: a second pass with the same tokenizer (caches full). "
    "`*_speedup` = clipforge's rate / that library's. Corpora: COCO = the 25,014 COCO val2017 captions; "
    "accents / cjk / emoji / long = seeded rewrites of them (`benchmarks/text_corpora.py`: accented vowels, "
    "CJK/kana/Hangul spellings without spaces, inserted emoji incl. ZWJ sequences, 10-caption paragraphs "
    "truncated to 77 tokens). clipforge skips ftfy on texts it provably leaves unchanged and BPE-merges new "
    "words in Rust (`tokenizers`); open_clip runs ftfy + a Python BPE with a per-word cache; transformers "
    "runs no ftfy (so its ids can differ where ftfy repairs text) and its Rust pipeline.\n\n"
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1,000 texts per corpus, 1 round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cold-process", nargs=2, metavar=("LIB", "CORPUS"), help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hf-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if args.cold_process:
        _cold_process_main(*args.cold_process, args.limit, args.batch_size, args.hf_dir)
        return {}
    # COCO in full; 5,000 texts of each variant (2,500 paragraphs) keep the run to minutes.
    limits = {name: None if name == "coco" else 5000 for name in CORPORA}
    if args.smoke:
        limits = {name: 1000 for name in CORPORA}
    rounds = 1 if args.smoke else args.rounds
    load_before = os.getloadavg()[0]
    rows = benchmark(limits, args.batch_size, rounds)
    load = {"before": round(load_before, 1), "after": round(os.getloadavg()[0], 1)}
    report = {
        "machine": machine_info(1),
        "load_average": load,
        "batch_size": args.batch_size,
        "rounds": rounds,
    }
    report["rows"] = rows
    summary = (
        SUMMARY.format(batch_size=args.batch_size, rounds=rounds)
        + markdown_table(rows)
        + f"\nMachine: {report['machine']['cpu']}, {os.cpu_count()} cores shared with other jobs "
        f"(1-minute load average {load['before']} at the start, {load['after']} at the end: ratios are "
        "interleaved in one process, absolute rates are the loaded host's).\n"
    )
    return publish(args.out, "tokenizer_smoke" if args.smoke else "tokenizer", report, summary)


if __name__ == "__main__":
    main(sys.argv[1:])
