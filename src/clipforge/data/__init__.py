"""Training and evaluation data: sources -> decode-once cache -> sampler -> batched augmentation -> loaders.

Every training loader implements the one loader protocol of `clipforge.data.protocol` (set_epoch, iteration,
state_dict/load_state_dict, batch_size, batches_per_epoch), which `clipforge.train.fit` consumes. Batches are
dicts {"images": (B, 3, S, S) float32, "text": (B, L) int64, "labels": (B,) int64, "index": (B,) int64}.
See docs/data.md for the layouts each source reads.
"""

from clipforge.data.augment import AugmentConfig, augment_batch, eval_batch, keyed_uniform
from clipforge.data.cache import CachedImages, cached_records, cached_shards, decode_records, decode_shards
from clipforge.data.captions import DEFAULT_TEMPLATES, ImageCaptions, PromptCaptioner
from clipforge.data.captiontable import CaptionTable, open_caption_table, read_caption_table
from clipforge.data.cifar import SafeUnpickler, load_cifar_python
from clipforge.data.csvjsonl import read_table
from clipforge.data.errors import DataSourceError, SkipCounter, SkipSample
from clipforge.data.evalsets import (
    LabelledTensors,
    RetrievalSet,
    load_retrieval_set,
    load_zeroshot_eval,
    to_eval_tensors,
)
from clipforge.data.folders import read_caption_folder, read_image_folder
from clipforge.data.labelled import LabelledArrays, read_classes
from clipforge.data.loader import ArrayLoader, LabelledLoaderConfig, labelled_loader
from clipforge.data.mapstyle import RecordDataset, RecordLoader
from clipforge.data.protocol import Batch, TrainData, check_train_data
from clipforge.data.public import decode_size, detect_layout, open_caption_shards, open_labelled_dataset
from clipforge.data.records import Record, decode_caption, decode_image
from clipforge.data.sampler import EpochBatchSampler, EpochSampler, epoch_permutation, seeded_split
from clipforge.data.synthetic import synthetic_colours
from clipforge.data.tarshards import expand_shards, iter_shard
from clipforge.data.webdataset import ShardLoader, ShardStream, StreamConfig, open_stream

__all__ = [
    "DEFAULT_TEMPLATES",
    "ArrayLoader",
    "AugmentConfig",
    "Batch",
    "CaptionTable",
    "CachedImages",
    "DataSourceError",
    "EpochBatchSampler",
    "EpochSampler",
    "ImageCaptions",
    "LabelledArrays",
    "LabelledLoaderConfig",
    "LabelledTensors",
    "PromptCaptioner",
    "Record",
    "RecordDataset",
    "RecordLoader",
    "ShardLoader",
    "ShardStream",
    "StreamConfig",
    "TrainData",
    "RetrievalSet",
    "SafeUnpickler",
    "SkipCounter",
    "SkipSample",
    "augment_batch",
    "check_train_data",
    "cached_records",
    "cached_shards",
    "decode_caption",
    "decode_image",
    "decode_records",
    "decode_size",
    "decode_shards",
    "detect_layout",
    "epoch_permutation",
    "eval_batch",
    "expand_shards",
    "iter_shard",
    "keyed_uniform",
    "labelled_loader",
    "load_cifar_python",
    "load_retrieval_set",
    "load_zeroshot_eval",
    "open_caption_shards",
    "open_caption_table",
    "open_labelled_dataset",
    "open_stream",
    "read_caption_folder",
    "read_caption_table",
    "read_classes",
    "read_image_folder",
    "read_table",
    "seeded_split",
    "synthetic_colours",
    "to_eval_tensors",
]
