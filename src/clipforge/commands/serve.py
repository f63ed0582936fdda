"""`clipforge serve`: the web service (classify, embed, search, page) on uvicorn."""

from __future__ import annotations

import argparse

from clipforge.commands.options import add_model_args, load_model_from, user_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge serve", description=__doc__)
    add_model_args(p)
    p.add_argument("--index", type=user_path, help="index folder from `clipforge index` (enables /search)")
    p.add_argument("--host", default="127.0.0.1", help="default loopback only; 0.0.0.0 to expose")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=8.0)
    p.add_argument("--max-image-pixels", type=int, default=40_000_000)
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request time limit")
    p.add_argument("--max-batch", type=int, default=32, help="largest micro-batch per model call")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import torch

    from clipforge.extras import require

    require("fastapi", "clipforge serve")
    uvicorn = require("uvicorn", "clipforge serve")

    from clipforge.apps.serve import ServeLimits, create_app

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_image_pixels=args.max_image_pixels,
        request_timeout_s=args.timeout_s,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    model, preprocess = load_model_from(args)
    app = create_app(model, preprocess, args.index, limits, model_name=args.checkpoint or args.model)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return {"host": args.host, "port": args.port}
