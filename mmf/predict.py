"""Recognise the product in new clips: rank a shop gallery for each clip with a trained run.

Python API (what ``mmf_predict`` does)::

    from mmf.predict import Predictor

    predictor = Predictor("save/lpr_rice_vic_vim_rec")          # or its config.yaml
    index = predictor.index_gallery("shop_images/")              # cached across calls
    matches = predictor.predict(["clip.mp4", "frames_folder/"], index, topk=5)
    # {"clip.mp4": [Match(image_id, path, score), ...], ...}, best first

What is reused from the evaluation (``mmf.evaluation``): the run's config and checkpoint
(``loading``), its ``eval_image_processor`` and ``masked_video_processor`` (the test-time
transforms and the temporal slicing to ``max_temporal_len`` frames, through the videotoshop
sample code), ``encode_gallery`` / ``encode_queries``, the ranking (``rank_queries``: scores
are cosine similarities, ties in gallery order) and the ranking picture (``pictures``).

Inputs:

- a clip is an mp4 (or any video PyAV reads), decoded at 1 fps as the training frames were
  (``mmf.datasets.video_frames``), or a folder of frame images in name order; ``Clip`` also
  carries per-frame ``boxes`` (the frames are cropped to their union, as in training);
- the gallery is a folder of images (searched recursively, in path order) or an LPR4M gallery
  list (``<live_id>/<image file>`` per line, relative to ``gallery_root``, by default the
  list's folder); ``live_id`` keeps one livestream of a list.

This is a user's gallery, not the benchmark: an unreadable gallery image is named in a warning
and left out, and the rest is still ranked (the evaluation, by contrast, stops on one).

The gallery index (embeddings, ids, paths) is cached in ``cache_dir`` under a name derived
from the gallery and the checkpoint, with a fingerprint (checkpoint path, size and mtime; a
hash of the resolved config; every gallery file's name, size and mtime): a changed model,
config or gallery file rebuilds it. It is written atomically.
"""
import dataclasses
import hashlib
import io
import json
import logging
import os

import torch
from omegaconf import OmegaConf
from PIL import Image

from mmf.common.batch_collator import BatchCollator
from mmf.common.errors import DataError
from mmf.common.sample import Sample
from mmf.datasets.builders.videotoshop.database import read_gallery_txt
from mmf.datasets.builders.videotoshop.images import UnreadableImageError, load_image
from mmf.datasets.builders.videotoshop.samples import VideoToShopSamples
from mmf.datasets.ids import IMAGE_EXTENSIONS, normalize_id
from mmf.datasets.video_frames import read_video_frames
from mmf.evaluation.encoding import encode_gallery, encode_queries, make_loader
from mmf.evaluation.loading import default_checkpoint, load_eval_config, load_eval_model
from mmf.evaluation.pictures import TOP, plot_rankings
from mmf.evaluation.ranking import rank_queries
from mmf.utils.build import build_processors
from mmf.utils.file_io import atomic_write

logger = logging.getLogger(__name__)

PROCESSOR_KEYS = ("eval_image_processor", "masked_video_processor")
CLIP_FPS = 1
INDEX_VERSION = 1


@dataclasses.dataclass
class Clip:
    """A query clip: ``frames`` (image paths or PIL images, in time order) and optional
    per-frame ``boxes`` ([[x1, y1, x2, y2], ...] each) and ``asr`` text for models that
    use them."""

    name: str
    frames: list
    boxes: list = None
    asr: str = None


@dataclasses.dataclass
class GalleryItem:
    """A shop image: ``path`` and an optional ``title`` for models that use it."""

    path: str
    title: str = None

    @property
    def image_id(self):
        return normalize_id(self.path)


@dataclasses.dataclass
class GalleryIndex:
    """Embeddings [G, E] of the readable gallery images, in gallery order; ``skipped``:
    the paths of images that could not be read."""

    items: list
    emb: torch.Tensor
    skipped: list
    path: str = None
    reused: bool = False


@dataclasses.dataclass
class Match:
    image_id: str
    path: str
    score: float


class Predictor:
    """A trained run ready to rank shop galleries for new clips (module docstring).

    Args:
        run: the run folder (holding ``config.yaml``) or its ``config.yaml``.
        checkpoint: weights (default ``<model>_final.pth`` next to the config).
        cache_dir: where gallery indexes are kept (default ``~/.cache/mmf/predict``).
    """

    def __init__(self, run, checkpoint=None, device="cpu", batch_size=32, num_workers=0,
                 cache_dir=None, dataset=None):
        self.config_file = os.path.join(run, "config.yaml") if os.path.isdir(run) else run
        self.config, dataset = load_eval_config(self.config_file, dataset)
        self.checkpoint = checkpoint or default_checkpoint(self.config, self.config_file)
        self.model = load_eval_model(self.config, self.checkpoint, device)
        node = self.config.dataset_config[dataset]
        processors = node.get("processors") or {}
        self.processors = build_processors(
            {key: processors[key] for key in PROCESSOR_KEYS if key in processors},
            where=f"dataset_config.{dataset}.processors", data_dir=node.get("data_dir"),
        )
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir or os.path.join(
            os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "mmf", "predict"
        )

    def index_gallery(self, gallery, gallery_root=None, live_id=None):
        """The ``GalleryIndex`` of ``gallery`` (a folder, a gallery list or a list of
        ``GalleryItem``): read from the cache when its fingerprint matches, else encoded and
        cached."""
        items = gallery_items(gallery, gallery_root, live_id)
        source = [os.path.abspath(gallery) if isinstance(gallery, str) else None, live_id]
        fingerprint = self._fingerprint(items, source)
        path = os.path.join(self.cache_dir, f"gallery-{_digest(fingerprint['key'])[:16]}.pt")
        cached = _read_index(path)
        if cached is not None and cached["fingerprint"] == fingerprint:
            logger.info("gallery index reused: %s (%d images)", path, len(cached["paths"]))
            return _index_of(cached, items, path, reused=True)
        samples = _Samples(self.processors, items, "gallery")
        encoded = encode_gallery(self.model, self._loader(samples), self.device,
                                 progress=False, global_gallery=True)
        kept = {int(i) for i in encoded.ids}
        stored = {
            "version": INDEX_VERSION, "fingerprint": fingerprint, "emb": encoded.emb,
            "paths": [items[i].path for i in sorted(kept)],
            "skipped": [item.path for i, item in enumerate(items) if i not in kept],
        }
        os.makedirs(self.cache_dir, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(stored, handle))
        logger.info("gallery index built: %s (%d images, %d unreadable)", path,
                    len(stored["paths"]), len(stored["skipped"]))
        return _index_of(stored, items, path, reused=False)

    def predict(self, clips, index, topk=10):
        """``{clip name: [Match, ...]}`` (best first, at most ``topk``) for ``clips`` (paths
        of videos or frame folders, or ``Clip``s), ranked against ``index``."""
        clips = [clip if isinstance(clip, Clip) else read_clip(clip) for clip in clips]
        if not index.items:
            raise DataError("the gallery has no readable image")
        samples = _Samples(self.processors, clips, "query")
        encoded = encode_queries(self.model, self._loader(samples), self.device,
                                 progress=False, global_gallery=True)
        gallery_ids = [str(i) for i in range(len(index.items))]
        result = rank_queries(
            encoded.emb, encoded.ids, index.emb, gallery_ids, {i: [] for i in encoded.ids},
            topk=topk, device=self.device,
        )
        matches = {}
        for row, query in enumerate(result.query_ids):
            top = [index.items[int(i)] for i, _ in result.topk_ids(row)]
            scores = [score for _, score in result.topk_ids(row)]
            matches[clips[int(query)].name] = [
                Match(item.image_id, item.path, float(score))
                for item, score in zip(top, scores, strict=True)
            ]
        return matches

    def picture(self, clip, matches, path):
        """PNG at ``path``: the clip's frames as the model sees them, then its top 5
        (``matches`` of the clip, from ``predict``)."""
        clip = clip if isinstance(clip, Clip) else read_clip(clip)
        sample = _Samples(self.processors, [clip], "query")[0]
        frames = [f for f, keep in zip(sample["video"], sample["video_temporal_mask"],
                                       strict=True) if keep]
        top = matches[:TOP]
        gallery = _Samples(self.processors, [GalleryItem(m.path) for m in top], "gallery")
        images = {m.image_id: gallery[i]["image"] for i, m in enumerate(top)}
        ranking = [(m.image_id, m.score) for m in top]
        plot_rankings(path, clip.name, frames, [("top", ranking)], images)
        return path

    def _loader(self, samples):
        return make_loader(samples, self.batch_size, self.num_workers)

    def _fingerprint(self, items, source):
        checkpoint = os.path.abspath(self.checkpoint)
        status = os.stat(checkpoint)
        config = OmegaConf.to_yaml(self.config, sort_keys=True)
        files = []
        for item in items:
            try:
                info = os.stat(item.path)
                files.append([item.path, info.st_size, info.st_mtime_ns])
            except OSError:
                files.append([item.path, None, None])
        return {
            "key": [checkpoint, source],
            "checkpoint": [checkpoint, status.st_size, status.st_mtime_ns],
            "config": _digest(config),
            "gallery": _digest(files),
        }


def read_clip(path):
    """A ``Clip`` of a video file (1 fps) or of a folder of frame images (name order)."""
    path = str(path)
    if os.path.isdir(path):
        frames = _image_files(path)
        if not frames:
            raise DataError(f"clip folder {path} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        return Clip(path, frames)
    if not os.path.isfile(path):
        raise DataError(f"clip not found: {path}")
    return Clip(path, read_video_frames(path, CLIP_FPS))


def gallery_items(gallery, gallery_root=None, live_id=None):
    """``GalleryItem``s of a folder of images, of an LPR4M gallery list, or ``gallery``
    itself when it is a list of them."""
    if isinstance(gallery, (list, tuple)):
        items = [g if isinstance(g, GalleryItem) else GalleryItem(str(g)) for g in gallery]
    elif os.path.isdir(gallery):
        items = [GalleryItem(path) for path in _image_files(gallery, recursive=True)]
    elif os.path.isfile(gallery):
        root = gallery_root or os.path.dirname(os.path.abspath(gallery))
        records = [r for r in read_gallery_txt(gallery) if live_id in (None, r.live_id)]
        items = [GalleryItem(os.path.join(root, record.path)) for record in records]
    else:
        raise DataError(f"gallery not found: {gallery}")
    if not items:
        raise DataError(f"gallery {gallery} holds no image")
    return items


def write_predictions(path, matches):
    """``{clip: [{image_id, path, score}, ...]}`` as json, atomically."""
    data = {clip: [dataclasses.asdict(m) for m in ranked] for clip, ranked in matches.items()}
    text = json.dumps(data, indent=1) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def format_matches(matches):
    """The console table: per clip, one line per match (rank, score, image id, path)."""
    lines = []
    for clip, ranked in matches.items():
        lines.append(f"{clip}")
        lines.append(f"  {'rank':>4}  {'score':>7}  image")
        for rank, match in enumerate(ranked, start=1):
            lines.append(f"  {rank:>4}  {match.score:7.4f}  {match.image_id}  ({match.path})")
    return "\n".join(lines)


class _Samples(VideoToShopSamples, torch.utils.data.Dataset):
    """Clips (``kind="query"``) or gallery items as the videotoshop test samples are made
    (same processors, no augmentation). Ids are item positions; a gallery image that cannot
    be read is logged and dropped (the collator skips None)."""

    dataset_name = "predict"
    use_augments = False

    def __init__(self, processors, items, kind):
        for key, processor in processors.items():
            setattr(self, key, processor)
        self.items = items
        self.kind = kind

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        sample = Sample()
        if self.kind == "query":
            sample.update(self._video_fields(item.frames, item.boxes))
            sample.video_id = str(index)
            if item.asr is not None:
                sample.asr = item.asr
            return sample
        try:
            sample.update(self._image_fields(item.path))
        except UnreadableImageError as error:
            logger.warning("skipping unreadable gallery image %s: %s", item.path, error)
            return None
        sample.image_id = str(index)
        if item.title is not None:
            sample.title = item.title
        return sample

    def read_image(self, ref, boxes=None, decode="pil"):
        if isinstance(ref, Image.Image):
            ref = _PNGFrame(ref)
        return load_image(ref, boxes, decode)

    @property
    def collate_fn(self):
        return BatchCollator(self.dataset_name, "test")


class _PNGFrame(io.BytesIO):
    """A decoded video frame handed to ``load_image`` as lossless PNG bytes."""

    def __init__(self, image):
        super().__init__()
        image.save(self, format="PNG", compress_level=1)
        self.seek(0)
        self.name = f"video frame ({image.width}x{image.height})"

    def __str__(self):
        return self.name


def _image_files(folder, recursive=False):
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found.extend(
            os.path.join(root, name) for name in sorted(files)
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        )
    return found


def _index_of(stored, items, path, reused):
    by_path = {item.path: item for item in items}
    kept = [by_path[p] for p in stored["paths"]]
    return GalleryIndex(kept, stored["emb"], list(stored["skipped"]), path, reused)


def _read_index(path):
    if not os.path.isfile(path):
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        logger.warning("gallery index %s is unreadable (%s); rebuilding it", path, error)
        return None
    return stored if stored.get("version") == INDEX_VERSION else None


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()
