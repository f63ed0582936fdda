"""--backend for the commands that run a model's towers (classify, embed): the rule is apps.backend's."""

from __future__ import annotations

import argparse

from clipforge.apps.backend import BACKENDS


def add_backend_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto (default): image tower on ONNX Runtime on CPU when onnxruntime is installed, else PyTorch; "
        "text tower PyTorch (shared prefixes). torch / onnx force one (docs/performance.md)",
    )
