"""The trainer's data from its config: `data.*` -> a loader of the one protocol, `eval.*` -> a zero-shot check.

Every kind goes through the same stack of clipforge.data: a source decoded once into a (memory-mapped) uint8
array, captions (templates for labelled images, sampled human captions for image–text tables), the seeded
epoch sampler split over ranks, batched augmentation keyed by (seed, epoch, index) — `ArrayLoader`. Data too
big for that streams (`data.kind=stream`): shards split over ranks x workers, a shuffle buffer, the same
augmentation — `ShardLoader`.
"""

from __future__ import annotations

from torch import nn

from clipforge.data import (
    DEFAULT_TEMPLATES,
    ArrayLoader,
    AugmentConfig,
    EpochSampler,
    LabelledArrays,
    PromptCaptioner,
    ShardLoader,
    StreamConfig,
    decode_size,
    load_zeroshot_eval,
    open_caption_shards,
    open_caption_table,
    open_labelled_dataset,
    open_stream,
    synthetic_colours,
)
from clipforge.data.captions import Captioner
from clipforge.data.labelled import read_classes
from clipforge.tokenizer import tokenizer_for
from clipforge.train.config import TrainConfig
from clipforge.train.distributed import DistInfo
from clipforge.train.metrics import ZeroShotEval

SYNTHETIC_TEMPLATES = ("a photo of a {}.",)


def augment_config(config: TrainConfig, model: nn.Module) -> AugmentConfig:
    """`data.augment` at the model's image size, mean and std."""
    section, preprocess = config.data.augment, model.config.preprocess
    return AugmentConfig(
        kind=section.kind, image_size=model.config.vision.image_size, padding=section.padding,
        scale=tuple(section.scale), ratio=tuple(section.ratio), flip=section.flip,
        mean=tuple(preprocess.mean), std=tuple(preprocess.std),
    )  # fmt: skip


def open_source(config: TrainConfig, model: nn.Module, progress: bool) -> tuple[LabelledArrays, Captioner]:
    """(decoded images, their captioner) for `config.data.kind`; captions use the model's own tokenizer (the
    one place the trainer picks it: OpenAI's BPE, or an HF text tower's)."""
    data, context_length = config.data, model.context_length
    tokenizer = tokenizer_for(model)
    size = data.decode_size or model.config.vision.image_size
    cache = dict(cache_dir=data.cache_dir, num_workers=data.num_workers, progress=progress)
    if data.kind == "synthetic":
        arrays = synthetic_colours(data.num_samples, size, data.num_classes, config.seed)
        templates = data.templates or SYNTHETIC_TEMPLATES
    elif data.kind == "labelled":
        split = data.split or "train"
        arrays = open_labelled_dataset(data.path, split, decode_size(data.path, split, size), **cache)
        templates = data.templates or DEFAULT_TEMPLATES
    elif data.kind == "table":
        return open_caption_table(
            data.path, data.split, size, context_length, config.seed, tokenizer=tokenizer, **cache
        )
    elif data.kind == "shards":
        return open_caption_shards(
            data.path, size, context_length, seed=config.seed, tokenizer=tokenizer, **cache
        )
    else:
        raise ValueError("data.kind=custom: pass train_data= to fit()")
    return arrays, PromptCaptioner(arrays.classes, templates, config.seed, context_length, tokenizer)


def build_train_data(config: TrainConfig, model: nn.Module, info: DistInfo) -> ArrayLoader | ShardLoader:
    """This rank's loader for `config.data`: whole batches only, the same count on every rank."""
    data = config.data
    if data.kind == "stream":
        return build_stream(config, model, info)
    arrays, captioner = open_source(config, model, info.is_main and config.log.progress)
    sampler = EpochSampler(
        len(arrays), config.seed, data.shuffle, info.rank, info.world_size, data.batch_size, drop_last=True
    )
    if sampler.batches_per_epoch == 0:
        raise ValueError(
            f"data: {len(arrays)} samples ({arrays.source}) give no full batch of data.batch_size="
            f"{data.batch_size} on each of {info.world_size} rank(s); lower data.batch_size"
        )
    return ArrayLoader(arrays, captioner, sampler, augment_config(config, model))


def build_stream(config: TrainConfig, model: nn.Module, info: DistInfo) -> ShardLoader:
    """`data.kind=stream`: WebDataset shards read as a stream by `data.num_workers` workers per rank, nothing
    held but each worker's shuffle buffer; images decoded at `data.decode_size` (null: the model's size)."""
    data = config.data
    stream = StreamConfig(
        batch_size=data.batch_size, image_size=data.decode_size or model.config.vision.image_size,
        seed=config.seed, shuffle_shards=data.shuffle, shuffle_buffer=data.shuffle_buffer if data.shuffle else 0,
        resampled=data.resampled, samples_per_epoch=data.samples_per_epoch, augment=augment_config(config, model),
    )  # fmt: skip
    classes = read_classes(data.classes) if data.classes else None
    return open_stream(
        data.path, stream, info.rank, info.world_size, data.num_workers, classes, tuple(data.templates),
        model.context_length, pin_memory=info.device.type == "cuda", tokenizer=tokenizer_for(model),
    )  # fmt: skip


def build_zeroshot_eval(config: TrainConfig, model: nn.Module) -> ZeroShotEval | None:
    """Zero-shot top-1 on `eval.zeroshot_data` (its `eval.zeroshot_split`), None when it is not set."""
    section = config.eval
    if section.zeroshot_data is None:
        return None
    preprocess = model.config.preprocess
    tensors = load_zeroshot_eval(
        section.zeroshot_data, section.zeroshot_split, model.config.vision.image_size, tuple(preprocess.mean),
        tuple(preprocess.std), config.data.cache_dir, section.max_images,
    )  # fmt: skip
    return ZeroShotEval(
        tensors.images, tensors.labels, tensors.classes, list(section.templates), section.batch_size
    )
