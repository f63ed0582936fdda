"""TrainConfig: every training knob as nested frozen dataclasses (defaults -> YAML -> key=value overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from clipforge.overrides import ConfigError


@dataclass(frozen=True)
class ModelSection:
    name: str = "tiny-vit"  # a preset from clipforge.models.PRESETS
    pretrained: str | None = None  # checkpoint path or registry tag to start from
    context_length: int | None = None  # shorter text context than the preset's (cheaper; captions are short)
    image_size: int | None = None  # train at another resolution than the preset's
    grad_checkpointing: bool = False
    lock_image: bool = False  # LiT: freeze the image tower
    lock_text: bool = False
    patch_dropout: float = (
        0.0  # FLIP: share of a ViT's patch tokens dropped per image in training (paper: 0.5)
    )
    compile: bool = False  # torch.compile the towers (parameter names and checkpoints unchanged)
    # Pretrained towers (docs/towers.md): a file/folder or a clipforge.local_weights name, loaded into a timm
    # image trunk (vision.kind=timm, e.g. "efficientnet-lite0") / an HF text encoder (text.kind=hf,
    # e.g. "all-MiniLM-L6-v2"); projections start fresh.
    image_tower: str | None = None
    text_tower: str | None = None
    lock_image_unlocked_groups: int = 0  # with lock_image: the last N timm layer groups still train
    lock_text_unlocked_layers: int = 0  # with lock_text: the last N transformer layers still train
    lock_text_freeze_layer_norm: bool = True


@dataclass(frozen=True)
class AugmentSection:
    """Train-time augmentation of each uint8 batch (clipforge.data.augment); output size, mean and std are the
    model's. Random numbers come from (seed, epoch, sample index), so resumed runs see the same pixels."""

    kind: Literal["crop_flip", "resized_crop_flip", "none"] = "crop_flip"
    padding: int = 4  # crop_flip: reflect-pad by this much, then crop back to size (CIFAR style)
    scale: tuple[float, float] = (0.5, 1.0)  # resized_crop_flip: crop area as a fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # resized_crop_flip: crop aspect (width / height) range
    flip: bool = True  # random horizontal flip


@dataclass(frozen=True)
class DataSection:
    # synthetic: noisy colour images named by their colour | labelled: any labelled layout (WebDataset shards
    # with .cls, CIFAR pickles, ImageFolder, path/label tables), captions from `templates` | table: an
    # image-caption CSV/TSV/JSONL (path, caption[, split]), several rows per image: one caption per image per
    # epoch | shards: image-caption WebDataset shards (.jpg + .txt), decoded once into the cache | stream: the
    # same shards (or labelled ones, with `classes`) streamed, never held: local paths, brace patterns,
    # `pipe:COMMAND` or http(s) URLs | custom: pass train_data= to fit()
    kind: Literal["synthetic", "labelled", "table", "shards", "stream", "custom"] = "synthetic"
    path: str | None = None  # labelled/table/shards/stream: the file, folder, glob or shard pattern
    split: str | None = None  # labelled: the layout's split (null: train); table: keep rows whose `split`
    # column equals it (a table with such a column needs one, e.g. train)
    templates: tuple[
        str, ...
    ] = ()  # labelled/synthetic captions; empty: the defaults (12 / "a photo of a {}.")
    decode_size: int | None = None  # images are decoded once at this size (shorter side + centre crop) into a
    # memory-mapped cache; null: the model's image size. Larger leaves detail for random resized crops
    cache_dir: str | None = (
        None  # the decode cache (null: $CLIPFORGE_CACHE/images or ~/.cache/clipforge/images)
    )
    augment: AugmentSection = field(default_factory=AugmentSection)
    batch_size: int = 64  # pairs per optimizer step on each rank (global batch = batch_size * world size)
    accum_steps: int = 1  # micro-batches per step; the loss still sees the whole batch (GradCache)
    num_workers: int = 2  # processes decoding the cache on its first run; stream: loader workers per rank
    shuffle: bool = True
    # stream only: samples per worker in the sliding shuffle buffer; shards drawn with replacement; samples in
    # an epoch over all ranks (resampled: required; otherwise at most this many); class names (classes.txt, one
    # per line, line = label) to caption .cls labels with `templates` (null: a classes.txt beside the shards,
    # else the .txt captions)
    shuffle_buffer: int = 1000
    resampled: bool = False
    samples_per_epoch: int | None = None
    classes: str | None = None
    num_samples: int = 512  # synthetic only
    num_classes: int = 10  # synthetic only


@dataclass(frozen=True)
class OptimSection:
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 100
    min_lr: float = 0.0
    grad_clip_norm: float | None = 1.0  # null: no clipping


@dataclass(frozen=True)
class LossSection:
    # a name registered with clipforge.train.objectives.register_objective: the library's "contrastive" (CLIP),
    # or one that other code registers (see docs/training.md, "Objectives")
    objective: str = "contrastive"
    local_loss: bool = False  # each rank computes only its rows of the similarity matrix
    gather_with_grad: bool = True  # exact gradients across ranks (False: cheaper approximation)
    max_logit_scale: float = 100.0  # exp(logit_scale) is clamped to this after every step
    dedup_text: bool = False  # encode each distinct caption of a batch once (same result; template captions)
    # sigmoid (SigLIP): across ranks as a ring of neighbour exchanges (memory constant in world size) or by
    # all-gathering the texts; initial temperature t' and bias b, as in the paper (null: keep the model's; the
    # bias is the model's logit_bias when it has one, e.g. SigLIP presets, else the objective's own)
    sigmoid_form: Literal["ring", "gather"] = "ring"
    sigmoid_init_logit_scale: float | None = 2.302585092994046  # log 10
    sigmoid_init_logit_bias: float | None = -10.0


@dataclass(frozen=True)
class CheckpointSection:
    every_steps: int = 0  # 0: only at the end of each epoch and of training
    keep_last: int = 2
    best_metric: str = "zeroshot_top1"  # higher is better; best.pt is kept beside the last K
    resume: str | None = None  # "auto" (newest in output_dir/checkpoints) or a file path


@dataclass(frozen=True)
class LogSection:
    every_steps: int = 10
    progress: bool = True  # tqdm bar
    jsonl: bool = True  # output_dir/metrics.jsonl
    tensorboard: bool = False  # output_dir/tensorboard
    plot: bool = True  # output_dir/train_curve.png at the end


@dataclass(frozen=True)
class EvalSection:
    zeroshot_every_steps: int = 0  # 0: only at the end (when zeroshot_data is set)
    zeroshot_data: str | None = None  # any labelled layout (e.g. ../shared/data/cifar10 or its test.csv)
    zeroshot_split: str = "test"  # the split of zeroshot_data's layout (ignored for a single table file)
    templates: tuple[str, ...] = ("a photo of a {}.",)
    max_images: int = 1000
    batch_size: int = 256


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)
    eval: EvalSection = field(default_factory=EvalSection)
    output_dir: str = "runs/train"
    epochs: int = 1
    max_steps: int | None = None  # stop (and end the schedule) after this many optimizer steps
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    deterministic: bool = (
        False  # only deterministic kernels (strict on CUDA); needed for bit-exact GPU resume
    )
    ema_decay: float | None = None  # an EMA of the weights, evaluated and saved beside them (e.g. 0.999)

    def validate(self) -> TrainConfig:
        """Value checks the types cannot express; raises ConfigError naming the field."""
        checks = [
            (self.data.batch_size > 0, "data.batch_size must be > 0"),
            (self.data.accum_steps > 0, "data.accum_steps must be > 0"),
            (
                self.data.batch_size % self.data.accum_steps == 0,
                f"data.batch_size ({self.data.batch_size}) must be divisible by data.accum_steps "
                f"({self.data.accum_steps})",
            ),
            (self.data.num_workers >= 0, "data.num_workers must be >= 0"),
            (self.epochs > 0, "epochs must be > 0"),
            (self.max_steps is None or self.max_steps > 0, "max_steps must be > 0 or null"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (self.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
            (self.checkpoint.keep_last >= 1, "checkpoint.keep_last must be >= 1"),
            (self.log.every_steps >= 1, "log.every_steps must be >= 1"),
            (self.loss.max_logit_scale > 1, "loss.max_logit_scale must be > 1"),
            (0 <= self.model.patch_dropout < 1, "model.patch_dropout must be in [0, 1)"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be in (0, 1) or null"),
            (
                not (self.data.kind == "stream" and self.data.resampled and not self.data.samples_per_epoch),
                "data.resampled=true needs data.samples_per_epoch (a resampled stream has no natural end)",
            ),
            (
                self.data.kind in ("synthetic", "custom") or self.data.path is not None,
                f"data.path is required when data.kind={self.data.kind}",
            ),
            (self.data.augment.padding >= 0, "data.augment.padding must be >= 0"),
            (
                0 < self.data.augment.scale[0] <= self.data.augment.scale[1] <= 1,
                "data.augment.scale must be [low, high] with 0 < low <= high <= 1",
            ),
            (
                0 < self.data.augment.ratio[0] <= self.data.augment.ratio[1],
                "data.augment.ratio must be [low, high] with 0 < low <= high",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"config: {message}")
        return self
