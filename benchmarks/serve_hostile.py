"""Hostile-request load test of `clipforge serve` on loopback (issue #15): while attackers send template
floods, thin 1xN images, chunked oversized uploads and slow clients, an innocent client's requests must
still be answered within their timeout, the server's memory must stay bounded (peak RSS stated), and
SIGTERM, sent while the attack is still running, must stop the server within 10 s.

    .venv/bin/python -m benchmarks.serve_hostile                  # tiny-vit, 30 s of attack
    .venv/bin/python -m benchmarks.serve_hostile --attack-s 60 --slow-clients 128

The attackers (each a loop; `--floods` etc. of them run at once):
  flood    /classify with 20 fresh labels x 100 templates (2,000 prompts: at the cap, so accepted and costly),
           every other one 200 x 500 (over the cap: 422 before any text work)
  thin     /embed with a 1x300,000 PNG (a few hundred bytes; 413 from the header, never decoded)
  chunked  /embed with a chunked body above --max-upload-mb (413 while it streams)
  slow     raw sockets: half send their headers a byte a second and never finish (408 at the server's
           --header-timeout-s), half declare a body and trickle it (504 at its --timeout-s); each comes back
           with a new connection when cut

Writes benchmarks/results/serve_hostile.json and .md; exits non-zero when an innocent request failed or
was late, an attacker got a status outside its expected set, or shutdown took 10 s or more.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.serve_load import HOST, prepare, proc_memory_kb, rss_sampled, server_parser, serving

EXPECTED = {  # what each attacker may get back; anything else is a failure
    "flood": {"200", "422", "503", "504"},
    "thin": {"413"},
    "chunked": {"413", "disconnected"},
    "slow-body": {"504", "disconnected"},
    "slow-headers": {"408"},
}
SHUTDOWN_LIMIT_S = 10.0


def unexpected_statuses(statuses: Counter) -> dict[str, int]:
    """The attack:status counts outside EXPECTED; a slow client may also be mid-connection when the attack
    ends ("held to the end": at most one per slow client)."""
    allowed = {
        kind: {*codes, "held to the end"} if kind.startswith("slow") else codes
        for kind, codes in EXPECTED.items()
    }
    return {
        key: n
        for key, n in statuses.items()
        if key.split(":", 1)[1] not in allowed.get(key.split(":")[0], ())
    }


def thin_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 300_000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


async def flood(http, rng: random.Random, image: bytes):
    over = rng.random() < 0.5
    labels, templates = (200, 500) if over else (20, 100)
    words = [f"thing{rng.randrange(10**9)}" for _ in range(labels)]  # fresh labels: no cached head helps
    data = {"labels": ",".join(words), "templates": "|".join(f"t{j} {{}}" for j in range(templates))}
    return await http.post("/classify", files={"image": ("a.jpg", image, "image/jpeg")}, data=data)


async def thin(http, rng: random.Random, image: bytes):
    return await http.post("/embed", files={"image": ("t.png", image, "image/png")})


def chunked_body(total: int):
    head = b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'

    async def chunks():
        yield head
        for _ in range(total // 65536 + 1):
            yield b"\0" * 65536
        yield b"\r\n--B--\r\n"

    return chunks()


async def chunked(http, rng: random.Random, total: int):
    return await http.post(
        "/embed", content=chunked_body(total), headers={"content-type": "multipart/form-data; boundary=B"}
    )


async def attacker(kind: str, base_url: str, until: float, statuses: Counter, seed: int, payload) -> None:
    import httpx

    call = {"flood": flood, "thin": thin, "chunked": chunked}[kind]
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        while time.monotonic() < until:
            try:
                statuses[f"{kind}:{(await call(http, rng, payload)).status_code}"] += 1
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                statuses[f"{kind}:disconnected"] += 1  # the server answered and closed mid-upload
            except httpx.HTTPError as err:
                statuses[f"{kind}:{type(err).__name__}"] += 1


async def slow_client(port: int, until: float, statuses: Counter, trickle_body: bool) -> None:
    """A slow client that comes back: a new slow connection each time the server cuts the last one."""
    while time.monotonic() < until:
        await slow_connection(port, until, statuses, trickle_body)


async def slow_connection(port: int, until: float, statuses: Counter, trickle_body: bool) -> None:
    """Holds a connection open, sending a byte a second (headers that never end, or a body that trickles)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as err:
        statuses[f"slow-connect:{type(err).__name__}"] += 1
        await asyncio.sleep(1.0)
        return
    kind = "slow-body" if trickle_body else "slow-headers"
    if trickle_body:
        writer.write(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                     b"Content-Length: 100000\r\n\r\n--B\r\n")  # fmt: skip
    else:
        writer.write(b"POST /classify HTTP/1.1\r\nHost: x\r\n")
    try:
        while time.monotonic() < until:
            writer.write(b"x")
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.readline(), 1.0)
            except TimeoutError:
                continue
            statuses[
                f"{kind}:{line.split()[1].decode() if line.startswith(b'HTTP/') else 'disconnected'}"
            ] += 1
            return
        statuses[f"{kind}:held to the end"] += 1
    except (ConnectionError, OSError):
        statuses[f"{kind}:disconnected"] += 1
    finally:
        writer.close()


async def innocent(base_url: str, until: float, image: bytes, labels: str, timeout_s: float) -> list[dict]:
    """One polite user: classify and text search in turn, each with its own timeout."""
    import httpx

    records = []
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as http:
        i = 0
        while time.monotonic() < until:
            start = time.perf_counter()
            try:
                if i % 2 == 0:
                    response = await http.post(
                        "/classify", files={"image": ("a.jpg", image, "image/jpeg")}, data={"labels": labels}
                    )
                else:
                    response = await http.get("/search", params={"q": "a photo of a cat.", "k": 5})
                status = str(response.status_code)
            except httpx.HTTPError as err:
                status = type(err).__name__
            records.append({"kind": "classify" if i % 2 == 0 else "search", "status": status,
                            "s": time.perf_counter() - start})  # fmt: skip
            i += 1
            await asyncio.sleep(0.2)
    return records


async def attack(port: int, args, image: bytes, labels: str) -> tuple[list[dict], Counter]:
    base_url = f"http://{HOST}:{port}"
    until = time.monotonic() + args.attack_s
    statuses: Counter = Counter()
    thin_image, oversize = thin_png(), int(args.max_upload_mb * 2**20) + 2**20
    tasks = [
        *(attacker("flood", base_url, until, statuses, i, image) for i in range(args.floods)),
        *(attacker("thin", base_url, until, statuses, i, thin_image) for i in range(args.thin)),
        *(attacker("chunked", base_url, until, statuses, i, oversize) for i in range(args.chunked)),
        *(slow_client(port, until, statuses, trickle_body=i % 2 == 1) for i in range(args.slow_clients)),
    ]
    attackers = [asyncio.ensure_future(t) for t in tasks]
    await asyncio.sleep(2.0)  # the attack is under way before the innocent user arrives
    records = await innocent(base_url, until, image, labels, args.innocent_timeout_s)
    await asyncio.gather(*attackers, return_exceptions=True)
    return records, statuses


def sigterm_under_attack(server, port: int, args, image: bytes) -> float:
    """Seconds from SIGTERM (sent while floods and slow clients are still at it) to the process's exit."""

    async def go() -> float:
        until = time.monotonic() + 60
        statuses: Counter = Counter()
        tasks = [asyncio.ensure_future(attacker("flood", f"http://{HOST}:{port}", until, statuses, 99 + i, image))
                 for i in range(args.floods)]  # fmt: skip
        tasks += [asyncio.ensure_future(slow_client(port, until, statuses, i % 2 == 1)) for i in range(8)]
        await asyncio.sleep(3.0)
        server.send_signal(signal.SIGTERM)
        started = time.perf_counter()
        while server.poll() is None and time.perf_counter() - started < 60:
            await asyncio.sleep(0.05)
        stopped = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return stopped

    return asyncio.run(go())


def summarise(
    records: list[dict], statuses: Counter, memory: dict, shutdown_s: float, args
) -> tuple[dict, str]:
    from clipforge.results import markdown_table

    late_or_failed = [r for r in records if r["status"] != "200" or r["s"] > args.innocent_timeout_s]
    unexpected = unexpected_statuses(statuses)
    latencies = np.array([r["s"] for r in records]) * 1000
    results = {
        "model": args.model,
        "attack_s": args.attack_s,
        "attackers": {
            "flood": args.floods,
            "thin": args.thin,
            "chunked": args.chunked,
            "slow": args.slow_clients,
        },
        "innocent_requests": len(records),
        "innocent_failed_or_late": len(late_or_failed),
        "innocent_timeout_s": args.innocent_timeout_s,
        "innocent_p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(records) else None,
        "innocent_p99_ms": round(float(np.percentile(latencies, 99)), 1) if len(records) else None,
        "innocent_max_ms": round(float(latencies.max()), 1) if len(records) else None,
        "attack_statuses": dict(sorted(statuses.items())),
        "unexpected_attack_statuses": unexpected,
        "server_rss_after_warmup_mb": round(memory["rss_warm_kb"] / 1024, 1),
        "server_peak_rss_mb": round(memory["peak_kb"] / 1024, 1),
        "server_rss_max_sampled_mb": round(memory["rss_max_sampled_kb"] / 1024, 1),
        "shutdown_after_sigterm_s": round(shutdown_s, 2),
        "shutdown_limit_s": SHUTDOWN_LIMIT_S,
        "loadavg_1min_start": memory["loadavg_start"],
        "loadavg_1min_end": memory["loadavg_end"],
        "cpu_count": os.cpu_count(),
    }
    keys = ("innocent_requests", "innocent_failed_or_late", "innocent_p50_ms", "innocent_p99_ms", "innocent_max_ms",
            "server_rss_after_warmup_mb", "server_peak_rss_mb", "shutdown_after_sigterm_s")  # fmt: skip
    md = (
        f"# Serve under hostile requests ({args.model}, {args.attack_s:g} s of attack, loopback)\n\n"
        f"Command: `.venv/bin/python -m benchmarks.serve_hostile --model {args.model} --attack-s {args.attack_s:g} "
        f"--floods {args.floods} --thin {args.thin} --chunked {args.chunked} --slow-clients {args.slow_clients}` "
        f"on {os.cpu_count()} CPU cores; load average (1 min) {memory['loadavg_start']} at the start, "
        f"{memory['loadavg_end']} at the end (other jobs share these cores). The server runs with its defaults but `--timeout-s {args.server_timeout_s:g}`.\n\n"
        + markdown_table([{k: results[k] for k in keys}], floatfmt=".1f")
        + f"\nInnocent requests: one client, classify (10 labels) and text search in turn, "
        f"{args.innocent_timeout_s:g} s timeout each; failed or late counts any non-200 or slower answer.\n\n"
        + markdown_table([{"attack:status": k, "count": n} for k, n in sorted(statuses.items())])
        + f"\nStatuses outside the expected sets: {unexpected or 'none'}. Shutdown: SIGTERM sent while "
        f"{args.floods} floods and 8 slow clients were still at it; limit {SHUTDOWN_LIMIT_S:g} s.\n\n"
        "Slow clients come back after each cut. A connection whose headers are not complete within "
        "`--header-timeout-s` (default 10 s) is answered 408 and closed; one whose body trickles gets 504 at "
        "`--timeout-s`. Limit: more than `--max-connections` (default 256) slow clients at the same moment "
        "would still fill the server until their time is up (new connections get 503); a per-client limit "
        "belongs in the reverse proxy in front.\n"
    )
    return results, md


def image_subset(data: Path, work: Path, count: int) -> Path:
    """A data folder whose images/test holds links to the first `count` test images (a small index to search)."""
    folder = work / "data" / "images" / "test"
    folder.mkdir(parents=True)
    for i, path in enumerate(sorted((data / "images" / "test").rglob("*.jpg"))[:count]):
        (folder / f"{i:05d}.jpg").symlink_to(path)
    return work / "data"


def main(argv: list[str] | None = None) -> dict:
    p = server_parser(__doc__)
    p.add_argument("--attack-s", type=float, default=30.0)
    p.add_argument("--floods", type=int, default=4)
    p.add_argument("--thin", type=int, default=2)
    p.add_argument("--chunked", type=int, default=2)
    p.add_argument("--slow-clients", type=int, default=64)
    p.add_argument("--innocent-timeout-s", type=float, default=10.0)
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="the server's default")
    p.add_argument("--server-timeout-s", type=float, default=10.0, help="the server's --timeout-s")
    args = p.parse_args(argv)
    if not 1 <= args.attack_s <= 600 or not 0 <= args.slow_clients <= 200:
        raise ValueError("keep it bounded: --attack-s in [1, 600], --slow-clients in [0, 200]")
    from clipforge.results import write_results

    data = Path(args.data)
    labels = ",".join((data / "classes.txt").read_text().split())
    image = sorted((data / "images" / "test").rglob("*.jpg"))[0].read_bytes()
    with tempfile.TemporaryDirectory(prefix="serve-hostile-") as tmp:
        checkpoint, index = prepare(
            args.model, image_subset(data, Path(tmp), 500), Path(tmp), args.server_threads
        )
        timeout = ("--timeout-s", str(args.server_timeout_s))
        with serving(checkpoint, index, args.server_threads, *timeout) as (server, port):
            memory = {"rss_warm_kb": proc_memory_kb(server.pid)["VmRSS"],
                      "loadavg_start": round(os.getloadavg()[0], 2)}  # fmt: skip
            with rss_sampled(server.pid) as samples:
                records, statuses = asyncio.run(attack(port, args, image, labels))
            memory.update(
                peak_kb=proc_memory_kb(server.pid)["VmHWM"], rss_max_sampled_kb=max(samples, default=0)
            )
            shutdown_s = sigterm_under_attack(server, port, args, image)
            memory["loadavg_end"] = round(os.getloadavg()[0], 2)
    results, md = summarise(records, statuses, memory, shutdown_s, args)
    paths = write_results(args.out, "serve_hostile", results, md)
    print(md)
    print(f"wrote {paths}")
    problems = []
    if results["innocent_failed_or_late"] or not records:
        problems.append(
            f"{results['innocent_failed_or_late']} of {len(records)} innocent requests failed or were late"
        )
    if results["unexpected_attack_statuses"]:
        problems.append(f"unexpected attack statuses {results['unexpected_attack_statuses']}")
    if shutdown_s >= SHUTDOWN_LIMIT_S:
        problems.append(f"shutdown took {shutdown_s:.1f} s")
    if problems:
        raise SystemExit("; ".join(filter(None, problems)))
    return results


if __name__ == "__main__":
    main()
