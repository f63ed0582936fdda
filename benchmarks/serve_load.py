"""Loopback load test of `clipforge serve`: N requests, C concurrent, to 127.0.0.1 only.

The server runs as its own process (`clipforge serve`) so its memory is measured alone: peak RSS from
/proc/<pid>/status VmHWM, and RSS sampled through the run to show it stays bounded. The mix is real
work: classify (image upload + 10 labels), embed an image, search by text, search by image, fetch a
thumbnail; 2% are deliberately bad requests (not an image, one label, oversized upload, path traversal)
that must get a 4xx. Every other request must succeed.

    .venv/bin/python -m benchmarks.serve_load                     # tiny-vit (seeded weights), 1000 x 16
    .venv/bin/python -m benchmarks.serve_load --model ViT-B-32    # model-bound (slow on a small CPU)

The default tiny model makes the model call cheap, so the figures measure the serving stack itself
(HTTP, multipart parsing, decoding, queueing, micro-batching, faiss); a big model adds its compute.

Writes benchmarks/results/serve_load.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
HOST = "127.0.0.1"  # loopback only, by design


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


@contextlib.contextmanager
def rss_sampled(pid: int, every_s: float = 0.25):
    """A list that fills with the process's RSS (kB), sampled in a thread while the block runs."""
    samples, stop = [], threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                samples.append(proc_memory_kb(pid)["VmRSS"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()


def prepare(model_name: str, data: Path, work: Path, threads: int) -> tuple[Path, Path]:
    """A checkpoint (seeded random weights unless given) and an index over CIFAR-10 test images."""
    import torch

    import clipforge
    from clipforge.apps.embed import embed_source
    from clipforge.apps.index import build_index_dir
    from clipforge.checkpoints import save
    from clipforge.transforms import Preprocess

    torch.set_num_threads(threads)
    if Path(model_name).is_file():
        checkpoint = Path(model_name)
        from clipforge.checkpoints import load_any

        model = load_any(checkpoint).eval()
    else:
        torch.manual_seed(0)
        model = clipforge.create_model(model_name).eval()
        checkpoint = save(model, work / "model.pt")
    embed_source(
        model,
        Preprocess(model.config.preprocess),
        data / "images" / "test",
        work / "emb",
        shard_size=500,
        progress=True,
    )
    build_index_dir(work / "emb", work / "index", progress=True)
    return checkpoint, work / "index"


@contextlib.contextmanager
def serving(checkpoint: Path, index: Path, threads: int, *extra: str):
    """`clipforge serve` as its own process on a free loopback port: (process, port) once /health answers;
    terminated (killed if it has not stopped) when the block ends."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "clipforge.cli", "serve", "--checkpoint", str(checkpoint), "--index",
               str(index), "--host", HOST, "--port", str(port), "--threads", str(threads), "--log-level",
               "warning", *extra]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not come up within 120 s")
            time.sleep(0.2)
        yield server, port
    finally:
        if server.poll() is None:
            server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def request_plan(n: int, images: list[bytes], labels: str, seed: int = 0) -> list[tuple[str, bool]]:
    """(kind, deliberately_bad) per request, shuffled deterministically."""
    rng = random.Random(seed)
    bad_kinds = ["bad-not-image", "bad-one-label", "bad-oversize", "bad-traversal"]
    plan = []
    for i in range(n):
        if i % 50 == 49:
            plan.append((bad_kinds[(i // 50) % len(bad_kinds)], True))
        else:
            plan.append(
                (
                    rng.choices(
                        ["classify", "embed", "search-text", "search-image", "thumb"], [40, 25, 20, 10, 5]
                    )[0],
                    False,
                )
            )
    rng.shuffle(plan)
    return plan


async def one_request(http, kind: str, image: bytes, labels: str, rng: random.Random):
    if kind == "classify":
        return await http.post(
            "/classify", files={"image": ("a.jpg", image, "image/jpeg")}, data={"labels": labels}
        )
    if kind == "embed":
        return await http.post("/embed", files={"image": ("a.jpg", image, "image/jpeg")})
    if kind == "search-text":
        words = labels.split(",")
        return await http.get("/search", params={"q": f"a photo of a {rng.choice(words)}.", "k": 12})
    if kind == "search-image":
        return await http.post("/search", files={"image": ("a.jpg", image, "image/jpeg")}, data={"k": "12"})
    if kind == "thumb":
        return await http.get(f"/thumbs/{rng.randrange(1000):08d}.jpg")
    if kind == "bad-not-image":
        return await http.post(
            "/classify", files={"image": ("a.jpg", b"plain text", "image/jpeg")}, data={"labels": labels}
        )
    if kind == "bad-one-label":
        return await http.post(
            "/classify", files={"image": ("a.jpg", image, "image/jpeg")}, data={"labels": "cat"}
        )
    if kind == "bad-oversize":
        return await http.post("/embed", files={"image": ("a.jpg", os.urandom(9 * 2**20), "image/jpeg")})
    if kind == "bad-traversal":
        return await http.get("/thumbs/..%2Findex.json")
    raise ValueError(kind)


async def run_load(base_url: str, plan, images: list[bytes], labels: str, concurrency: int):
    import httpx

    semaphore = asyncio.Semaphore(concurrency)
    records = []
    bar = tqdm(total=len(plan), desc="requests", unit="req")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:

        async def task(i: int, kind: str, bad: bool):
            rng = random.Random(i)
            async with semaphore:
                start = time.perf_counter()
                try:
                    response = await one_request(http, kind, images[i % len(images)], labels, rng)
                    status = response.status_code
                except httpx.HTTPError as err:
                    status = f"error: {type(err).__name__}"
                records.append({"kind": kind, "bad": bad, "status": status, "s": time.perf_counter() - start})
                bar.update(1)

        wall = time.perf_counter()
        await asyncio.gather(*(task(i, kind, bad) for i, (kind, bad) in enumerate(plan)))
        wall = time.perf_counter() - wall
        health = (await http.get("/health")).json()
    bar.close()
    return records, wall, health


def summarise(records, wall: float, health: dict, memory: dict, args) -> tuple[dict, str]:
    from clipforge.results import markdown_table

    good = [r for r in records if not r["bad"]]
    bad = [r for r in records if r["bad"]]
    failed = [r for r in good if r["status"] != 200]
    bad_not_4xx = [r for r in bad if not (isinstance(r["status"], int) and 400 <= r["status"] < 500)]
    latencies = np.array([r["s"] for r in good]) * 1000
    rows = []
    for kind in sorted({r["kind"] for r in records}):
        lat = np.array([r["s"] for r in records if r["kind"] == kind]) * 1000
        statuses = sorted({str(r["status"]) for r in records if r["kind"] == kind})
        rows.append(
            {
                "kind": kind,
                "count": len(lat),
                "p50_ms": round(float(np.percentile(lat, 50)), 1),
                "p99_ms": round(float(np.percentile(lat, 99)), 1),
                "statuses": "/".join(statuses),
            }
        )
    results = {
        "model": args.model,
        "requests": len(records),
        "concurrency": args.concurrency,
        "host": HOST,
        "server_threads": args.server_threads,
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(records) / wall, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "failed_good_requests": len(failed),
        "deliberately_bad": len(bad),
        "bad_without_4xx": len(bad_not_4xx),
        "server_peak_rss_mb": round(memory["peak_kb"] / 1024, 1),
        "server_rss_after_warmup_mb": round(memory["rss_warm_kb"] / 1024, 1),
        "server_rss_end_mb": round(memory["rss_end_kb"] / 1024, 1),
        "server_rss_max_sampled_mb": round(memory["rss_max_sampled_kb"] / 1024, 1),
        "loadavg_1min_start": memory["loadavg_start"],
        "loadavg_1min_end": memory["loadavg_end"],
        "batching": health["batching"],
        "per_kind": rows,
        "cpu_count": os.cpu_count(),
    }
    md = (
        f"# Serve load test ({args.model}, {len(records)} requests, {args.concurrency} concurrent, loopback)\n\n"
        f"Command: `.venv/bin/python -m benchmarks.serve_load --model {args.model} --requests {args.requests} "
        f"--concurrency {args.concurrency} --server-threads {args.server_threads}` on {os.cpu_count()} CPU cores; "
        f"machine load average (1 min) {memory['loadavg_start']} at the start, {memory['loadavg_end']} at the end "
        f"(other jobs share these cores, so absolute figures are pessimistic).\n\n"
        + markdown_table(
            [
                {
                    k: results[k]
                    for k in (
                        "throughput_rps",
                        "p50_ms",
                        "p99_ms",
                        "failed_good_requests",
                        "deliberately_bad",
                        "bad_without_4xx",
                        "server_peak_rss_mb",
                        "server_rss_after_warmup_mb",
                        "server_rss_end_mb",
                    )
                }
            ],
            floatfmt=".1f",
        )
        + "\nLatency of successful requests; throughput counts all requests.\n\n"
        + markdown_table(rows, floatfmt=".1f")
        + f"\nMicro-batching (image queue): {health['batching']['image']}; "
        f"text queue: {health['batching']['text']}\n"
    )
    return results, md


def server_parser(doc: str) -> argparse.ArgumentParser:
    """The options every serve benchmark shares: the model, the server's threads, the data and results."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-vit", help="preset (seeded random weights) or a checkpoint file")
    p.add_argument("--server-threads", type=int, default=1, help="torch threads in the server")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--out", default=str(RESULTS))
    return p


def main(argv: list[str] | None = None) -> dict:
    p = server_parser(__doc__)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 10_000 or not 1 <= args.concurrency <= 64:
        raise ValueError("keep it bounded: --requests in [1, 10000], --concurrency in [1, 64]")
    from clipforge.results import write_results

    data = Path(args.data)
    classes = (data / "classes.txt").read_text().split()
    image_paths = sorted((data / "images" / "test").rglob("*.jpg"))[::10]
    images = [p.read_bytes() for p in image_paths]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        checkpoint, index = prepare(args.model, data, Path(tmp), args.server_threads)
        with serving(checkpoint, index, args.server_threads) as (server, port):
            # warm-up (first batches allocate), then the measured run with RSS sampled in the background
            labels = ",".join(classes)
            asyncio.run(run_load(f"http://{HOST}:{port}", [("classify", False)] * 32, images, labels, 16))
            memory = {
                "rss_warm_kb": proc_memory_kb(server.pid)["VmRSS"],
                "loadavg_start": round(os.getloadavg()[0], 2),
            }
            with rss_sampled(server.pid) as samples:
                plan = request_plan(args.requests, images, labels)
                records, wall, health = asyncio.run(
                    run_load(f"http://{HOST}:{port}", plan, images, labels, args.concurrency)
                )
            final = proc_memory_kb(server.pid)
            memory.update(
                peak_kb=final["VmHWM"],
                rss_end_kb=final["VmRSS"],
                samples=len(samples),
                rss_max_sampled_kb=max(samples, default=0),
                loadavg_end=round(os.getloadavg()[0], 2),
            )
    results, md = summarise(records, wall, health, memory, args)
    paths = write_results(args.out, "serve_load", results, md)
    print(md)
    print(f"wrote {paths}")
    if results["failed_good_requests"] or results["bad_without_4xx"]:
        raise SystemExit(
            f"{results['failed_good_requests']} good requests failed, "
            f"{results['bad_without_4xx']} bad ones were not refused with a 4xx"
        )
    return results


if __name__ == "__main__":
    main()
