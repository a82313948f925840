"""Clip-level WebDataset shards (written by ``scripts/pack_shards.py``) as a training dataset.

Shard format: ``<name>.tar`` holds, per training pair, the members ``<key>.json`` (ids, title,
category, ASR, per-frame boxes, the member names of its frames and image), ``<key>.image.<ext>``
and ``<key>.frameNNN.<ext>`` (the stored bytes, not re-encoded); keys are the 9-digit line
numbers of the annotation file, so any WebDataset reader groups them. Beside it,
``<name>.json`` (written last, so its presence marks a finished shard) gives ``samples``, the
byte ``offsets`` of every sample in the tar plus the end offset, and what could not be packed.

``ShardDataset`` yields the same ``Sample`` s as the files path (``VideoToShopSamples``, same
processors and fields). Its order is a pure function of (seed, epoch, shard sizes), computed
from the sidecars before a byte is read:

1. the shards are permuted with ``seed + epoch`` (when shuffling) and concatenated;
2. rank ``r`` of ``W`` takes the ``r``-th contiguous slice of ``ceil(N / W)`` positions (the
   last ones wrap to the start, like ``DistributedSampler``; ``drop_last`` takes
   ``floor(N / W)`` and drops the rest), so each rank reads about 1/W of the bytes;
3. that slice is cut into whole batches and DataLoader worker ``w`` of ``K`` takes the
   ``w``-th contiguous run of them; the DataLoader returns the workers' batches round robin,
   so batch ``b`` of the rank is batch ``b // K`` of worker ``b % K``;
4. each worker shuffles its run with a buffer of ``shard_shuffle_buffer`` samples (RNG seeded
   with seed, epoch, rank, worker) and reads it sequentially, holding at most the buffer.

Like a sampler, the dataset takes ``set_epoch(epoch)`` and ``skip(n)``: ``n`` is the number of
samples this rank consumed in the epoch (the trainer's ``batches_in_epoch * batch_size``); a
resumed epoch replays the same order and starts after them, reading from the first sample it
still needs. Each sample's augmentation is seeded like the files path's
(``sample_seed(seed, epoch, place)``, ``place = rank + i * W`` for the rank's ``i``-th sample),
so resume is exact with workers, and with ``training.shuffle`` false, one rank and a buffer
of 1 the shards give the files path's batches. With ``on_error: skip`` an unreadable frame
or image yields None (the collator drops and counts it), as in the files path.
"""
import dataclasses
import io
import json
import logging
import math
import os
import random
import tarfile

import braceexpand
import numpy as np
import torch

from mmf.common.errors import ConfigError, DataError
from mmf.datasets.base_dataset import BaseDataset
from mmf.datasets.boxes import PIXELS
from mmf.datasets.builders.videotoshop.clip_boxes import BoxSettings, ColumnBoxes
from mmf.datasets.builders.videotoshop.database import PairRecord
from mmf.datasets.builders.videotoshop.dataset import ON_ERROR_CHOICES
from mmf.datasets.builders.videotoshop.images import (
    NamedBytes,
    UnreadableImageError,
    load_image,
)
from mmf.datasets.builders.videotoshop.samples import VideoToShopSamples
from mmf.utils.distributed import get_rank, get_world_size
from mmf.utils.samplers import sample_seed, seeded_rngs

logger = logging.getLogger(__name__)


def sidecar_path(tar_path):
    """``shard-000003.tar`` -> ``shard-000003.json``."""
    return os.path.splitext(tar_path)[0] + ".json"


def expand_shards(spec, data_dir=""):
    """Tar paths of ``spec``: a brace pattern (``shards/lpr-{000000..000099}.tar``) or a list
    of paths or patterns, relative to ``data_dir``; order kept, repeats dropped."""
    patterns = [spec] if isinstance(spec, str) else list(spec or [])
    paths = []
    for pattern in patterns:
        for path in braceexpand.braceexpand(str(pattern)):
            path = os.path.join(data_dir, path)
            if path not in paths:
                paths.append(path)
    return paths


def read_sidecar(tar_path):
    """The sidecar dict of a finished shard; ``DataError`` naming it when absent or invalid."""
    path = sidecar_path(tar_path)
    if not os.path.isfile(tar_path):
        raise DataError(f"shard not found: {tar_path}")
    try:
        with open(path, encoding="utf-8") as handle:
            index = json.load(handle)
    except FileNotFoundError:
        raise DataError(
            f"{path} not found: {tar_path} is not a finished shard of scripts/pack_shards.py"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a shard index ({err})") from None
    offsets = index.get("offsets") if isinstance(index, dict) else None
    if not isinstance(offsets, list) or len(offsets) != index.get("samples", -1) + 1:
        raise DataError(f"{path}: expected 'samples' and 'offsets' (samples + 1 byte offsets)")
    return index


def read_sample(handle, tar_path, start, end):
    """``{member extension: bytes}`` of the sample stored at bytes ``[start, end)``."""
    handle.seek(start)
    raw = handle.read(end - start)
    members = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
            for member in archive:
                members[member.name.partition(".")[2]] = archive.extractfile(member).read()
    except tarfile.TarError as err:
        raise DataError(f"{tar_path}: damaged sample at byte {start} ({err})") from None
    return members


def record_of(members, tar_path):
    """A ``PairRecord`` whose frames and image are ``NamedBytes``."""
    try:
        meta = json.loads(members["json"])
        where = f"{tar_path}:{meta['key']}"
        frames = [NamedBytes(members[name], f"{where}.{name}") for name in meta["frames"]]
        image = NamedBytes(members[meta["image"]], f"{where}.{meta['image']}")
        return PairRecord(
            meta["video_id"], meta["live_id"], frames, meta["image_id"], image,
            title=meta.get("title"), category=meta.get("category"), asr=meta.get("asr"),
            boxes=meta.get("boxes"), where=where,
        )
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise DataError(f"{tar_path}: sample without a valid json or member ({err!r})") from None


def buffer_shuffle_order(length, buffer_size, rng):
    """Output order (indices into ``range(length)``) of a shuffle buffer of ``buffer_size``
    fed the items in order: once full, a random item leaves for each one that enters."""
    buffer, order = [], []
    for index in range(length):
        buffer.append(index)
        if len(buffer) >= buffer_size:
            order.append(_pop_random(buffer, rng))
    while buffer:
        order.append(_pop_random(buffer, rng))
    return order


def _pop_random(buffer, rng):
    pick = rng.randrange(len(buffer))
    buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
    return buffer.pop()


@dataclasses.dataclass
class LoaderLayout:
    """How the DataLoader of this rank consumes the dataset."""

    batch_size: int = 1
    drop_last: bool = False
    shuffle: bool = True
    seed: int = 0


class ShardDataset(VideoToShopSamples, BaseDataset, torch.utils.data.IterableDataset):
    """Training pairs from ``dataset_config.videotoshop.shards`` (see the module docstring).

    ``rank`` / ``world_size`` default to the process group's; ``configure_loader`` (called by
    ``build_dataloader_and_sampler``) sets batch size, drop_last, shuffle and seed.
    ``len()`` is the number of samples of this rank per epoch.
    """

    dataset_name = "videotoshop"

    def __init__(self, config, dataset_type="train", rank=None, world_size=None):
        super().__init__(self.dataset_name, config, dataset_type)
        self.on_error = str(config.get("on_error", "raise"))
        if self.on_error not in ON_ERROR_CHOICES:
            raise ConfigError(
                f"dataset_config.{self.dataset_name}.on_error must be one of {ON_ERROR_CHOICES}, "
                f"got {self.on_error!r}"
            )
        self.use_augments = dataset_type == "train"
        if config.get("box_mode"):
            raise ConfigError(
                f"model_config.rice.box_mode {config.get('box_mode')!r} reads the boxes of "
                f"annotation files; dataset_config.{self.dataset_name}.shards does not carry it"
            )
        self.box_settings = BoxSettings(config, self.dataset_name)
        self.buffer_size = int(config.get("shard_shuffle_buffer", 1000))
        if self.buffer_size < 1:
            raise ConfigError(
                f"dataset_config.{self.dataset_name}.shard_shuffle_buffer must be >= 1, "
                f"got {self.buffer_size}"
            )
        self.paths = expand_shards(config.get("shards"), str(config.get("data_dir") or ""))
        if not self.paths:
            raise ConfigError(f"dataset_config.{self.dataset_name}.shards lists no shard")
        indexes = [read_sidecar(path) for path in self.paths]
        self.sizes = np.array([index["samples"] for index in indexes], dtype=np.int64)
        self.offsets = [np.asarray(index["offsets"], dtype=np.int64) for index in indexes]
        self.total = int(self.sizes.sum())
        if self.total == 0:
            raise DataError(f"the shards of dataset_config.{self.dataset_name}.shards are empty")
        self.rank = get_rank() if rank is None else int(rank)
        self.world_size = get_world_size() if world_size is None else int(world_size)
        self.layout = LoaderLayout()
        self.epoch, self.start = 0, 0
        self.asr, self.title, self.has_category = {}, {}, False
        logger.info(
            "%s %s: %d pairs in %d shards (%s ...)",
            self.dataset_name, dataset_type, self.total, len(self.paths), self.paths[0],
        )

    def configure_loader(self, batch_size, drop_last=False, shuffle=True, seed=0):
        self.layout = LoaderLayout(int(batch_size), bool(drop_last), bool(shuffle), int(seed))
        return self

    def set_epoch(self, epoch):
        self.epoch, self.start = int(epoch), 0

    def skip(self, num_samples):
        """Start the next pass after the first ``num_samples`` samples of this rank's epoch."""
        self.start = max(0, int(num_samples))

    def __len__(self):
        per_rank = self._rank_samples()
        if self.layout.drop_last:
            return per_rank // self.layout.batch_size * self.layout.batch_size
        return per_rank

    def read_image(self, ref, decode="pil"):
        return load_image(ref, decode)

    def clip_boxes(self, record):
        """The clip's boxes under the legacy ``crop_to_box`` (the shard json's per-frame lists,
        pixels of the stored frame as ``crop_to_box`` always read them), else None."""
        if self.box_settings.mode is None or record.boxes is None:
            return None
        rows = [np.asarray(boxes, dtype=np.float64).reshape(-1, 4) for boxes in record.boxes]
        return ColumnBoxes(rows, PIXELS, record.where, self.on_error)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers = 1 if info is None else info.num_workers
        # The loader takes its next batch from its worker 0: after ``skip``, that worker plays
        # the part of the worker whose batch is due.
        worker = ((0 if info is None else info.id) + self.start // self.layout.batch_size) % workers
        order = self.worker_order(worker, workers)
        if not order:
            return
        locate = self.locator(worker, workers)
        wanted, cache, next_input = {p for _, p in order}, {}, min(p for _, p in order)
        with _ShardReader(self.paths, self.offsets) as reader:
            for place, position in order:
                while position not in cache:  # read on in storage order; keep what is due later
                    if next_input in wanted:
                        cache[next_input] = reader.read(*locate(next_input))
                    next_input += 1
                with seeded_rngs(sample_seed(self.layout.seed, self.epoch, place)):
                    sample = self._sample(*cache.pop(position))
                yield sample

    def _sample(self, tar_path, members):
        record = record_of(members, tar_path)
        try:
            return self._pair_sample(record)
        except UnreadableImageError as err:
            if self.on_error == "skip":
                logger.warning("skipping %s item of %s: %s", self.dataset_type, tar_path, err)
                return None
            raise

    # ------------------------------------------------------------------ order
    def _rank_samples(self):
        if self.layout.drop_last:
            return self.total // self.world_size
        return math.ceil(self.total / self.world_size)

    def worker_order(self, worker, workers):
        """``(place, position)`` of the samples this worker yields in this pass, in order.

        ``position``: in the worker's run (its buffer shuffle, less the samples the rank
        already consumed); ``place``: in the epoch's order over all ranks,
        ``rank + i * world_size`` for the rank's ``i``-th sample, as ``ResumableDistributedSampler``
        numbers them (it seeds the sample's augmentation).
        """
        _, run_length = self._worker_run(worker, workers)
        seed = f"{self.layout.seed}/{self.epoch}/{self.rank}/{worker}"
        buffer = self.buffer_size if self.layout.shuffle else 1
        order = buffer_shuffle_order(run_length, buffer, random.Random(seed))
        size = self.layout.batch_size
        done = self._consumed_by(worker, workers)
        return [
            (self.rank + ((k // size * workers + worker) * size + k % size) * self.world_size, p)
            for k, p in enumerate(order[done:], done)
        ]

    def locator(self, worker, workers):
        """``position in this worker's run -> (shard number, sample index in the shard)``."""
        shard_order = self._shard_order()
        ends = np.cumsum(self.sizes[shard_order])
        run_start, _ = self._worker_run(worker, workers)
        base = self.rank * self._rank_samples() + run_start

        def locate(position):
            global_position = (base + position) % self.total
            slot = int(np.searchsorted(ends, global_position, side="right"))
            shard = int(shard_order[slot])
            return shard, global_position - int(ends[slot] - self.sizes[shard])

        return locate

    def _shard_order(self):
        if not self.layout.shuffle:
            return np.arange(len(self.paths))
        generator = torch.Generator().manual_seed(self.layout.seed + self.epoch)
        return torch.randperm(len(self.paths), generator=generator).numpy()

    def _worker_batches(self, workers):
        """Batches of the rank per epoch and the number each worker produces."""
        size = self.layout.batch_size
        batches = len(self) // size if self.layout.drop_last else math.ceil(len(self) / size)
        return batches, [batches // workers + (w < batches % workers) for w in range(workers)]

    def _worker_run(self, worker, workers):
        """(first position, length) in the rank's slice of this worker's contiguous run."""
        _, counts = self._worker_batches(workers)
        size = self.layout.batch_size
        first = sum(counts[:worker]) * size
        return first, max(0, min(len(self), first + counts[worker] * size) - first)

    def _consumed_by(self, worker, workers):
        """Samples of this worker in the first ``start`` samples the rank consumed."""
        batches_done = self.start // self.layout.batch_size
        _, counts = self._worker_batches(workers)
        done = min(counts[worker], max(0, math.ceil((batches_done - worker) / workers)))
        return done * self.layout.batch_size


class _ShardReader:
    """Reads samples by (shard, index), keeping the last shard's file open."""

    def __init__(self, paths, offsets):
        self.paths, self.offsets = paths, offsets
        self.shard, self.handle = None, None

    def read(self, shard, index):
        """``(tar path, {member extension: bytes})``."""
        if shard != self.shard:
            self.close()
            self.handle = open(self.paths[shard], "rb")
            self.shard = shard
        offsets = self.offsets[shard]
        path = self.paths[shard]
        return path, read_sample(self.handle, path, int(offsets[index]), int(offsets[index + 1]))

    def close(self):
        if self.handle is not None:
            self.handle.close()
        self.shard, self.handle = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
