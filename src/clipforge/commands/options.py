"""What every subcommand parses the same way: model flags (--checkpoint / --model / --pretrained /
--random-weights / --device), typed numbers (a --batch-size of 0 is refused by argparse, on every command),
and output paths (checked before any work).

Model weights are always an explicit choice: a checkpoint, a preset with pretrained weights, or a preset
with `--random-weights` (smoke runs only; outputs are meaningless). A command given none refuses.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from clipforge.apps.backend import BACKENDS
from clipforge.device import DEFAULT_DEVICE

NO_WEIGHTS = (
    "no model weights given: use --checkpoint FILE (any supported format), --model NAME --pretrained TAG, "
    "or --model NAME --random-weights for a smoke run (random weights give meaningless outputs)"
)


def user_path(text: str) -> str:
    """argparse `type` for every path flag: `~` and `~user` expanded, as a shell would."""
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL byte")
    return os.path.expanduser(text)


def _number(kind: type, minimum: float, inclusive: bool = True):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if value != value or (value < minimum if inclusive else value <= minimum):  # NaN fails too
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__}"  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0.0, inclusive=False)


def port_number(text: str) -> int:
    value = _number(int, 0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0..65535, got {text}")
    return value


def add_model_args(
    parser: argparse.ArgumentParser, device: bool = True, optional_weights: str = "", backend: bool = False
) -> None:
    """--checkpoint / --model / --pretrained / --random-weights (+ --device, + --backend for the commands that
    run the image tower over many images: classify, embed, serve). `optional_weights`: help text saying where
    the weights come from when none are given (e.g. 'the index's model'); else required."""
    group = parser.add_argument_group("model (weights are never chosen for you)")
    group.add_argument(
        "--checkpoint",
        type=user_path,
        help="checkpoint file or HF folder, any format"
        + (f" (default: {optional_weights})" if optional_weights else ""),
    )
    group.add_argument("--model", help="preset name (see `clipforge models`); for --checkpoint files that do not "
                       "record their architecture, the name they were built with")  # fmt: skip
    group.add_argument("--pretrained", help="weights for --model: a registry tag such as 'openai', or a file")
    group.add_argument(
        "--random-weights",
        action="store_true",
        help="with --model: random initial weights, for smoke runs only (outputs are meaningless)",
    )
    if device:
        help_ = "auto (CUDA when available, else CPU), cpu, cuda, cuda:1"
        parser.add_argument("--device", default=DEFAULT_DEVICE, help=help_)
    if backend:
        parser.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="auto (default): on CPU both towers run as exported graphs (the text tower's on shared "
            "prefixes) on OpenVINO when installed, else ONNX Runtime (ModifiedResNet image towers: ONNX Runtime "
            "first), else PyTorch. torch / onnx / openvino force one (docs/apps.md)",
        )
        parser.add_argument(
            "--int8-calibration",
            type=user_path,
            metavar="IMAGES",
            help="int8 image tower (static: int8 weights, activation ranges from up to 64 of these images, a "
            "folder or file like your inputs), run by --backend's runtime (auto: OpenVINO, else ONNX Runtime); "
            "refused if its features drift from fp32's (mean cosine < 0.99)",
        )


def apply_backend(args: argparse.Namespace, model, preprocess, images: bool = True, texts: bool = True):
    """The model the command runs: `--backend` and `--int8-calibration` applied (apps.backend.use_backend);
    `images` / `texts`: whether it will run that tower."""
    from clipforge.apps.backend import calibration_batches, use_backend
    from clipforge.apps.inputs import collect_images

    calibration = None
    if args.int8_calibration:
        if not images:
            raise ValueError("--int8-calibration quantises the image tower; this command runs only texts")
        calibration = calibration_batches(collect_images([args.int8_calibration]), preprocess)
    return use_backend(model, args.backend, images=images, int8_calibration=calibration, texts=texts)


def has_weights(args: argparse.Namespace) -> bool:
    return bool(args.checkpoint or args.pretrained or args.random_weights)


def model_spec(args: argparse.Namespace) -> tuple[str, str | None]:
    """(what to load, pretrained) from the model flags; refuses a model without an explicit choice of
    weights and contradictory flags."""
    if args.checkpoint:
        if args.pretrained or args.random_weights:
            raise ValueError("--checkpoint carries its own weights; drop --pretrained / --random-weights")
        if not Path(args.checkpoint).exists():
            raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file or folder")
        return args.checkpoint, None
    if not args.model:
        if args.pretrained or args.random_weights:
            raise ValueError("--pretrained / --random-weights need --model NAME")
        raise ValueError(NO_WEIGHTS)
    if args.pretrained and args.random_weights:
        raise ValueError("--pretrained and --random-weights contradict each other; give one")
    if not (args.pretrained or args.random_weights):
        raise ValueError(f"--model {args.model}: {NO_WEIGHTS}")
    return args.model, args.pretrained


def model_source(args: argparse.Namespace) -> dict:
    """How outputs record the model (apps.provenance): enough to load it again."""
    if args.checkpoint:
        source = {"checkpoint": str(Path(args.checkpoint).resolve())}
        return {**source, "model": args.model} if args.model else source
    if args.random_weights:
        return {"name": args.model, "random_weights": True}
    return {"name": args.model, "pretrained": args.pretrained}


def load_model_from(args: argparse.Namespace, device: str | None = None):
    """(model, preprocess) through the one front door, `clipforge.factory.load_model` (or `load` with the
    architecture name, for a checkpoint file that does not record it)."""
    from clipforge.factory import load, load_model

    spec, pretrained = model_spec(args)
    device = device or args.device
    if args.checkpoint and args.model:
        return load(spec, device=device, model=args.model)
    if args.random_weights:
        import sys

        print(
            f"warning: --random-weights: {args.model} with random weights; outputs are meaningless",
            file=sys.stderr,
        )
    return load_model(spec, pretrained, device)
