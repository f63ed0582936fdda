"""What the demo and the experiments share: the TrainConfig of a fixed-budget CPU run on caller-supplied data."""

from __future__ import annotations

from typing import Protocol

from clipforge.train.config import (
    CheckpointSection,
    DataSection,
    EvalSection,
    LogSection,
    ModelSection,
    OptimSection,
    TrainConfig,
)


class Recipe(Protocol):
    """The fields of a fixed-budget recipe (demo.DemoConfig, experiments.runs.RunSettings)."""

    model: str
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    eval_points: int
    seed: int
    progress: bool


def in_memory_run(
    recipe: Recipe,
    total_steps: int,
    epochs: int,
    output_dir: str,
    templates: tuple[str, ...] = EvalSection.templates,
    checkpoint_every_steps: int = 0,
) -> TrainConfig:
    """The CPU fp32 run of a fixed step budget that the demo and the experiments train: data supplied by the
    caller (`data.kind=custom`), zero-shot evaluated `recipe.eval_points` times (0: never), one checkpoint."""
    return TrainConfig(
        model=ModelSection(name=recipe.model),
        data=DataSection(kind="custom", batch_size=recipe.batch_size),
        optim=OptimSection(
            lr=recipe.lr, weight_decay=recipe.weight_decay, warmup_steps=min(recipe.warmup_steps, total_steps)
        ),
        checkpoint=CheckpointSection(every_steps=checkpoint_every_steps, keep_last=1, best_metric="none"),
        log=LogSection(every_steps=10, progress=recipe.progress, plot=False),
        eval=EvalSection(
            zeroshot_every_steps=max(1, total_steps // recipe.eval_points) if recipe.eval_points > 0 else 0,
            templates=tuple(templates),
        ),
        output_dir=output_dir,
        epochs=epochs,
        max_steps=total_steps,
        seed=recipe.seed,
        device="cpu",
        precision="fp32",
    )  # fit() validates it
