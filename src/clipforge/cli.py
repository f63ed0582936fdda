"""`clipforge <subcommand>`: each subcommand lives in clipforge.commands.<module> as main(argv) -> dict."""

from __future__ import annotations

import importlib
import sys

# name -> (module under clipforge.commands, one-line help). Modules are imported only when used.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "train CLIP on Flickr8k captions; zero-shot on 5 unseen label sets + retrieval"),
    "models": ("models", "table of presets: parameters, image size, embed dim, GFLOPs"),
    "info": ("info", "describe a checkpoint file"),
    "convert": ("convert", "convert checkpoints between clipforge, OpenAI, open_clip and HF formats"),
    "train": ("train", "contrastive pretraining (CPU or torchrun)"),
    "prompts": ("prompts", "list prompt templates and class names"),
    "eval": ("eval", "zeroshot | retrieval | linear-probe | fewshot | shift"),
    "classify": ("classify", "zero-shot classify images with your own labels"),
    "embed": ("embed", "embed images or texts into sharded .npy files"),
    "index": ("index", "build a faiss index from embeddings"),
    "search": ("search", "search an index by text or image"),
    "serve": ("serve", "web service with a page"),
    "export-onnx": ("export_onnx", "export the image and text towers to ONNX"),
    "curate": ("curate", "WIT-style query-balanced dataset from raw image-text pairs"),
    "experiment": ("experiment", "objectives | prompts | robustness: the paper's findings at small scale"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: clipforge <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from clipforge import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"clipforge: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"clipforge.commands.{COMMANDS[name][0]}")
    try:
        module.main(rest)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"clipforge {name}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
