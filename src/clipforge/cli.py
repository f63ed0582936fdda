"""`clipforge <subcommand>`: each subcommand lives in clipforge.commands.<module> as main(argv) -> dict.

Errors (docs/apps.md#errors-and-exit-status): a problem with the input or the environment -- a bad value, a
missing or unreadable file, a full disk, a read-only folder, a missing extra -- is printed as one line
`clipforge <command>: error: ...` naming the file or flag, exit status 1 (2 for a malformed command line,
from argparse). Anything else is a bug in clipforge: its traceback is printed in full, followed by an
"internal error" line, exit status 70. Nothing is hidden: `CLIPFORGE_TRACEBACK=1` prints the traceback of
expected errors too.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from pathlib import Path

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

EXIT_ERROR = 1  # a problem with the input or the environment, explained in one line
EXIT_INTERNAL = 70  # a bug (EX_SOFTWARE): traceback shown
EXIT_INTERRUPTED = 130
PACKAGE_DIR = Path(__file__).resolve().parent


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: clipforge <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _raised_by_clipforge(error: BaseException) -> bool:
    """True when the innermost frame that raised `error` is clipforge's own code (a deliberate `raise`
    or a builtin called from it), not a dependency's internals."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def is_expected(error: BaseException) -> bool:
    """An input or environment problem (one line for the user), as opposed to a bug (a traceback)."""
    from clipforge.extras import MissingExtra

    if isinstance(error, (OSError, MissingExtra)):
        return True  # the file system, the network, a missing extra: the message names what
    if isinstance(error, KeyError):
        # clipforge raises KeyError with a sentence ("unknown model 'x'; available: ..."); a bare key is a bug
        message = error.args[0] if error.args else None
        return isinstance(message, str) and " " in message and _raised_by_clipforge(error)
    if isinstance(error, (ValueError, LookupError)):
        return _raised_by_clipforge(error)
    return False


def error_line(name: str, error: BaseException) -> str:
    """`clipforge <name>: error: <message>`; an OSError reads `<path>: <problem>`."""
    if isinstance(error, OSError) and error.filename is not None:
        reason = error.strerror or str(error)
        if isinstance(error, FileExistsError) and Path(os.fspath(error.filename)).is_file():
            reason = "is an existing file, not a folder"
        target = os.fspath(error.filename)
        if error.filename2 is not None:
            target += f" -> {os.fspath(error.filename2)}"
        message = f"{target}: {reason}"
    elif isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    else:
        message = str(error) or type(error).__name__
    return f"clipforge {name}: error: {message}"


def _safe_streams() -> None:
    """Undecodable bytes of file names (surrogate escapes) print as \\x.. instead of crashing a print."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # a closed or exotic stream
                stream.reconfigure(errors="backslashreplace")


def run(name: str, rest: list[str]) -> int:
    try:
        importlib.import_module(f"clipforge.commands.{COMMANDS[name][0]}").main(rest)
    except KeyboardInterrupt:
        print(f"clipforge {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `clipforge ... | head`
        sys.stderr.close()
        return EXIT_ERROR
    except Exception as error:  # noqa: BLE001 - the one place errors become exit statuses
        if not is_expected(error):
            traceback.print_exc()
            print(
                f"clipforge {name}: internal error ({type(error).__name__}): this is a bug in clipforge, "
                "please report it with the traceback above",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        if os.environ.get("CLIPFORGE_TRACEBACK") == "1":
            traceback.print_exc()
        print(error_line(name, error), file=sys.stderr)
        return EXIT_ERROR
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _safe_streams()
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
    try:
        return run(name, rest)
    except SystemExit as stop:  # argparse: usage errors (2) and --help (0)
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
