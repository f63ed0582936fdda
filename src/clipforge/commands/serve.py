"""`clipforge serve`: the web service (classify, embed, search, page) on uvicorn.

With --index and no model flags, it serves the model recorded in the index; SIGTERM/Ctrl-C stop it within
--shutdown-timeout-s (open requests are cancelled after that, queued model work is dropped). --backend
(default auto) runs the image tower on ONNX Runtime on CPU when onnxruntime is installed (apps.backend);
the micro-batching is the same for every backend."""

from __future__ import annotations

import argparse

from clipforge.commands.options import (
    add_model_args,
    apply_backend,
    has_weights,
    load_model_from,
    model_source,
    port_number,
    positive_float,
    positive_int,
    user_path,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipforge serve", description=__doc__)
    add_model_args(p, optional_weights="the model recorded in --index", backend=True)
    p.add_argument("--index", type=user_path, help="index folder from `clipforge index` (enables /search)")
    p.add_argument("--host", default="127.0.0.1", help="default loopback only; 0.0.0.0 to expose")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--max-upload-mb", type=positive_float, default=8.0)
    p.add_argument("--max-image-pixels", type=positive_int, default=40_000_000)
    p.add_argument("--max-prompts", type=positive_int, default=2_000, help="labels x templates per request")
    p.add_argument("--timeout-s", type=positive_float, default=30.0, help="per-request time limit")
    p.add_argument("--max-batch", type=positive_int, default=32, help="largest micro-batch per model call")
    p.add_argument("--max-wait-ms", type=positive_float, default=5.0, help="how long a batch waits to fill")
    p.add_argument("--max-connections", type=positive_int, default=256, help="beyond this: 503")
    p.add_argument("--header-timeout-s", type=positive_float, default=10.0, help="beyond this: 408, closed")
    p.add_argument("--shutdown-timeout-s", type=positive_float, default=5.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import torch

    from clipforge.extras import require

    require("fastapi", "clipforge serve")
    uvicorn = require("uvicorn", "clipforge serve")

    from clipforge.apps.provenance import load_recorded
    from clipforge.apps.search import SearchIndex
    from clipforge.apps.serve import ServeLimits, create_app
    from clipforge.apps.serve.connections import header_timeout_protocol

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_image_pixels=args.max_image_pixels,
        max_prompts=args.max_prompts,
        request_timeout_s=args.timeout_s,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        shutdown_timeout_s=args.shutdown_timeout_s,
    )
    index = SearchIndex(args.index) if args.index else None  # a bad index is refused before the model loads
    if has_weights(args) or args.model or index is None:
        model, preprocess = load_model_from(args)
        name = model_source(args)
    else:
        model, preprocess = load_recorded(index.model_source, args.device, index.folder / "index.json")
        name = index.model_source
    model = apply_backend(args, model, preprocess)  # after --threads: a runtime takes torch's count
    app = create_app(model, preprocess, args.index, limits, model_name=str(name))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=max(1, round(args.shutdown_timeout_s)),
        limit_concurrency=args.max_connections,
        http=header_timeout_protocol(args.header_timeout_s),
    )
    return {"host": args.host, "port": args.port}
