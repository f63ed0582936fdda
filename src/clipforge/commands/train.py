"""`clipforge train`: contrastive pretraining from a YAML config plus key=value overrides.

clipforge train --config configs/tiny-synthetic.yaml optim.lr=1e-3 data.batch_size=128
torchrun --nproc_per_node=2 $(which clipforge) train --config ... checkpoint.resume=auto
"""

from __future__ import annotations

import argparse
import json
import sys

SMOKE_OVERRIDES = (
    "model.name=tiny-vit",
    "model.context_length=16",
    "data.kind=synthetic",
    "data.num_samples=128",
    "data.batch_size=16",
    "epochs=1",
    "max_steps=6",
    "optim.warmup_steps=2",
    "log.every_steps=2",
    "output_dir=runs/train-smoke",
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="clipforge train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides, applied last"
    )
    parser.add_argument("--config", help="YAML file with TrainConfig fields (see configs/)")
    parser.add_argument("--resume", help="'auto' (newest checkpoint in output_dir) or a state file")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run: a few steps, seconds")
    parser.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    args = parser.parse_args(argv)

    import clipforge.recipes.experiments.objectives  # noqa: F401  (registers the paper's comparison objectives)
    from clipforge.overrides import ConfigError, load_config, to_dict
    from clipforge.train import TrainConfig, fit

    overrides = list(SMOKE_OVERRIDES if args.smoke else ()) + list(args.overrides)
    if args.resume:
        overrides.append(f"checkpoint.resume={args.resume}")
    try:
        config = load_config(TrainConfig, args.config, overrides).validate()
    except ConfigError as error:
        print(f"clipforge train: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.print_config:
        print(json.dumps(to_dict(config), indent=2))
        return to_dict(config)
    results = fit(config)
    if "files" in results:
        print(f"results: {results['files']['json']}")
    return results


if __name__ == "__main__":
    main()
