"""`clipforge prompts`: the prompt templates and class names shipped as package data."""

from __future__ import annotations

import argparse
import json

from clipforge.results import markdown_table
from clipforge.zeroshot.classnames import get_classnames, list_classname_sets
from clipforge.zeroshot.templates import get_templates


def prompt_rows() -> list[dict]:
    rows = []
    for name in list_classname_sets():
        classes, templates = get_classnames(name), get_templates(name)
        rows.append(
            {
                "dataset": name,
                "classes": len(classes),
                "templates": len(templates),
                "example": templates[0].format(classes[0]),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="clipforge prompts", description=__doc__)
    parser.add_argument("dataset", nargs="?", help="show this dataset's templates and class names")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.dataset:
        result = {
            "dataset": args.dataset,
            "templates": get_templates(args.dataset),
            "classnames": get_classnames(args.dataset),
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"# {args.dataset}: {len(result['classnames'])} classes, {len(result['templates'])} templates\n"
            )
            print("\n".join(result["templates"]) + "\n\n" + ", ".join(result["classnames"]))
        return result
    rows = prompt_rows()
    print(json.dumps(rows, indent=2) if args.json else markdown_table(rows))
    return {"datasets": rows}
