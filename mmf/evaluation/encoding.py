"""Encoding every gallery image and query clip once, batched, and caching the result.

``encode_gallery`` / ``encode_queries`` run ``model.encode_image`` / ``model.encode_video``
over a dataset in order (no shuffling, no augmentation) and return ``Encoded`` embeddings
with their normalised ids and live ids. With PMD re-ranking the gallery tokens go to a
float16 ``TokenStore`` on disk (a file private to the process) and each query batch is handed
to the re-ranker right after it is encoded, so no clip's tokens are kept. ``save_embeddings``
writes the cache
``<out>/embeddings.pt``. ``texts`` (``asr`` / ``title``, see ``mmf.evaluation.text_coverage``):
the texts a text model reads; each item's text is encoded once, in its batch, and fused into
its embedding (so the cache holds the text-fused embeddings).
"""
import dataclasses
import os
import tempfile

import numpy as np
import torch
from tqdm import tqdm

from mmf.datasets.ids import normalize_id
from mmf.datasets.prefetch import to_device
from mmf.utils.file_io import atomic_write

EMBEDDINGS_FILE = "embeddings.pt"


@dataclasses.dataclass
class Encoded:
    """Embeddings of one side (queries or gallery) with their ids, in dataset order.

    ``emb`` [N, E] float32 on CPU; ``groups`` [N] live ids (None for a global gallery).
    Items the dataset skipped (``on_error: skip``) are absent.
    """

    ids: list
    groups: list
    emb: torch.Tensor

    def subset(self, rows):
        return Encoded([self.ids[r] for r in rows], [self.groups[r] for r in rows], self.emb[rows])


def make_loader(dataset, batch_size, num_workers):
    """An ordered loader over ``dataset`` (or a ``Subset`` of one) with its collate function."""
    collate_fn = getattr(dataset, "collate_fn", None) or dataset.dataset.collate_fn  # Subset
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=False,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


@torch.inference_mode()
def encode_gallery(model, loader, device, token_store=None, progress=True, global_gallery=False,
                   texts=()):
    """Image embeddings of every gallery item; gallery tokens go to ``token_store`` if given.
    Groups are the items' ``live_id`` (None for all with ``global_gallery``)."""
    ids, groups, chunks = [], [], []
    for batch in tqdm(loader, desc="gallery", unit="batch", disable=not progress):
        size = len(batch.get("image_id") or [])
        if size:
            moved = to_device(batch, device)
            emb, tokens = model.encode_image(moved["image"], **_texts(model, moved, texts, "title"))
            chunks.append(emb.float().cpu())
            if token_store is not None:
                token_store.append(tokens)
            ids.extend(normalize_id(i) for i in batch["image_id"])
            groups.extend(_groups(batch, size, global_gallery))
    return Encoded(ids, groups, torch.cat(chunks) if chunks else torch.zeros(0, 0))


@torch.inference_mode()
def encode_queries(model, loader, device, on_batch=None, progress=True, global_gallery=False,
                   texts=()):
    """Video embeddings of every query clip; ``on_batch(ids, groups, emb, tokens, mask)`` (and
    ``asr=`` the batch's ``TextVectors`` when the ASR is read) is called after each batch (PMD
    re-ranking). Groups as in ``encode_gallery``."""
    ids, groups, chunks = [], [], []
    for batch in tqdm(loader, desc="queries", unit="batch", disable=not progress):
        size = len(batch.get("video_id") or [])
        if size:
            moved = to_device(batch, device)
            video, mask = moved["video"], moved["video_temporal_mask"]
            text = _texts(model, moved, texts, "asr")
            boxes = moved.get("video_boxes")
            emb, tokens = model.encode_video(video, mask, **text, **_boxes(boxes))
            batch_ids = [normalize_id(i) for i in batch["video_id"]]
            batch_groups = _groups(batch, size, global_gallery)
            if on_batch is not None:
                if boxes is not None:  # box_mode patch_mask: the re-ranking keys too
                    mask = model.key_mask(video, mask, tokens.size(2), boxes)
                on_batch(batch_ids, batch_groups, emb, tokens, mask, **text)
            chunks.append(emb.float().cpu())
            ids.extend(batch_ids)
            groups.extend(batch_groups)
    return Encoded(ids, groups, torch.cat(chunks) if chunks else torch.zeros(0, 0))


def _texts(model, batch, texts, side):
    """``{side: TextVectors}`` of the batch when ``side`` is read, else ``{}``; a batch without
    the field (no text file) gives every item the "no text" path."""
    field = f"{side}_tokens"
    if side not in texts or field not in batch:
        return {}
    return {side: model.encode_text(batch[field])}


def _boxes(boxes):
    """``{"boxes": [B,F,4]}`` for a batch with ``video_boxes`` (``box_mode: patch_mask``)."""
    return {} if boxes is None else {"boxes": boxes}


def _groups(batch, size, global_gallery):
    if global_gallery or batch.get("live_id") is None:
        return [None] * size
    return list(batch["live_id"])


class TokenStore:
    """Gallery tokens [G, T, D] in a float16 ``numpy.memmap`` (rows in encoding order), in a
    file of this process's own under ``folder`` (``.gallery_tokens.<random>.npy``), removed by
    ``close``: evaluations sharing a folder never read each other's tokens."""

    def __init__(self, folder, capacity):
        handle, self.path = tempfile.mkstemp(prefix=".gallery_tokens.", suffix=".npy", dir=folder)
        os.close(handle)
        self.capacity = capacity
        self.array = None
        self.size = 0

    def append(self, tokens):
        tokens = tokens.detach().to("cpu", torch.float16).numpy()
        if self.array is None:
            shape = (self.capacity,) + tokens.shape[1:]
            self.array = np.lib.format.open_memmap(
                self.path, mode="w+", dtype=np.float16, shape=shape
            )
        self.array[self.size : self.size + len(tokens)] = tokens
        self.size += len(tokens)

    def get(self, rows):
        """Tokens of ``rows`` (a 1-d int array) as a float16 tensor [len(rows), T, D]."""
        return torch.from_numpy(np.ascontiguousarray(self.array[rows]))

    def close(self):
        if self.array is not None:
            del self.array
            self.array = None
        if os.path.exists(self.path):
            os.remove(self.path)


def save_embeddings(path, checkpoint, queries, gallery):
    """The embedding cache: both sides' ids, live ids and embeddings, and the checkpoint
    (written atomically)."""
    cache = {
        "checkpoint": os.path.abspath(checkpoint),
        "query_ids": queries.ids,
        "query_groups": queries.groups,
        "query_emb": queries.emb,
        "gallery_ids": gallery.ids,
        "gallery_groups": gallery.groups,
        "gallery_emb": gallery.emb,
    }
    atomic_write(path, lambda handle: torch.save(cache, handle))
