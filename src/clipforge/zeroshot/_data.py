"""Load the JSON package data once (prompts, class names, class-subset maps)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load_json(name: str) -> Any:
    return json.loads(resources.files("clipforge.zeroshot").joinpath("data", name).read_text("utf-8"))
