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
are cosine similarities, or the ICL score with a text model's ``score`` fusion; ties in
gallery order) and the ranking picture (``pictures``).

Inputs:

- a clip is an mp4 (or any video PyAV reads), decoded at 1 fps as the training frames were
  (``mmf.datasets.video_frames``), or a folder of frame images in name order;
- the gallery is a folder of images (searched recursively, in path order) or an LPR4M gallery
  list (``<live_id>/<image file>`` per line, relative to ``gallery_root``, by default the
  list's folder); ``live_id`` keeps one livestream of a list.

Text and boxes, for a model that reads them (as the evaluation feeds them):

- text (``model_config.rice.text``): a ``Clip``'s ``asr`` and a ``GalleryItem``'s ``title``
  are tokenized like the dataset's (``samples.build_text_processor``); a missing one takes
  the model's "no text" path. Titles come from ``titles`` (``read_texts``: ``name<TAB>title``
  lines or a json ``{name: title}``, names matched as image ids) or, by default, from
  ``titles.tsv`` / ``titles.json`` in a gallery folder, or the file matching the dataset's
  ``title_file`` pattern (``annotations/test_image_title_*.txt``) under the folder above a
  gallery list's (the LPR4M root);
- boxes (``model_config.rice.box_mode``): a ``Clip``'s ``boxes`` is a ``BoxTable`` of its
  frames by frame id (``read_boxes``: the layout of the test box json), used exactly as in the
  evaluation (``clip_boxes.TableBoxes``, ``box_rule``, ``crop_rect`` / patch masks). A frame
  id is the frame file's stem, or ``<video stem>-<NNNN>`` for the n-th (from 0) 1 fps frame
  of a video. Frames without a box stay whole, and ``Predictor.inputs`` says how many.

Text or boxes given to a model that does not read them is a ``ConfigError``, as in
``lpr_eval.py --text`` / ``--boxes``.

This is a user's gallery, not the benchmark: an unreadable gallery image is named in a warning
and left out, and the rest is still ranked (the evaluation, by contrast, stops on one).

The gallery index (embeddings, ids, paths) is cached in ``cache_dir`` under a name derived
from the gallery and the checkpoint, with a fingerprint (checkpoint path, size and mtime; a
hash of the resolved config; every gallery file's name, size and mtime; the titles read): a
changed model, config, gallery file or title rebuilds it. It is written atomically.
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
from mmf.common.errors import ConfigError, DataError
from mmf.common.sample import Sample
from mmf.datasets.boxes import read_box_json
from mmf.datasets.builders.videotoshop.clip_boxes import BoxSettings, TableBoxes
from mmf.datasets.builders.videotoshop.database import (
    find_annotation_file,
    read_gallery_txt,
    read_json,
    read_text_map,
)
from mmf.datasets.builders.videotoshop.images import UnreadableImageError, load_image
from mmf.datasets.builders.videotoshop.samples import VideoToShopSamples, build_text_processor
from mmf.datasets.ids import IMAGE_EXTENSIONS, normalize_id
from mmf.datasets.video_frames import read_video_frames
from mmf.evaluation.encoding import encode_gallery, encode_queries, make_loader
from mmf.evaluation.loading import default_checkpoint, load_eval_config, load_eval_model
from mmf.evaluation.pictures import TOP, plot_rankings
from mmf.evaluation.ranking import rank_queries
from mmf.evaluation.text_coverage import text_sides
from mmf.utils.build import build_processors
from mmf.utils.file_io import atomic_write

logger = logging.getLogger(__name__)

PROCESSOR_KEYS = ("eval_image_processor", "masked_video_processor")
CLIP_FPS = 1
INDEX_VERSION = 1
TITLE_FILES = ("titles.tsv", "titles.json")


@dataclasses.dataclass
class Clip:
    """A query clip: ``frames`` (image paths or PIL images, in time order), ``frame_ids``
    (what a box file names them by; default: a frame file's stem, ``<clip stem>-<NNNN>`` for
    the n-th PIL frame), and for models that read them ``boxes`` (a ``BoxTable``, see
    ``Predictor.read_boxes``) and ``asr`` text."""

    name: str
    frames: list
    frame_ids: list = None
    boxes: object = None
    asr: str = None

    def __post_init__(self):
        if self.frame_ids is None:
            stem = normalize_id(os.path.normpath(self.name))
            self.frame_ids = [
                normalize_id(frame) if isinstance(frame, str) else f"{stem}-{index:04d}"
                for index, frame in enumerate(self.frames)
            ]
        if len(self.frame_ids) != len(self.frames):
            raise DataError(f"clip {self.name}: {len(self.frame_ids)} frame ids for "
                            f"{len(self.frames)} frames")


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

    ``texts``: the texts the model reads (``asr`` / ``title``); ``box_settings``: its
    ``box_mode`` (None: boxes unused), ``box_rule`` and ``box_margin``.
    """

    def __init__(self, run, checkpoint=None, device="cpu", batch_size=32, num_workers=0,
                 cache_dir=None, dataset=None):
        self.config_file = os.path.join(run, "config.yaml") if os.path.isdir(run) else run
        self.config, dataset = load_eval_config(self.config_file, dataset)
        self.checkpoint = checkpoint or default_checkpoint(self.config, self.config_file)
        self.model = load_eval_model(self.config, self.checkpoint, device)
        node = self.config.dataset_config[dataset]
        self.dataset_node = node
        processors = node.get("processors") or {}
        self.processors = build_processors(
            {key: processors[key] for key in PROCESSOR_KEYS if key in processors},
            where=f"dataset_config.{dataset}.processors", data_dir=node.get("data_dir"),
        )
        self.box_settings = BoxSettings(node, dataset)
        self.texts = text_sides(None, self.model)
        self.text_processor = None
        if self.texts:
            where = f"model_config.{self.config.model}.text"
            self.text_processor, _ = build_text_processor(
                OmegaConf.select(self.config, where), where
            )
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir or os.path.join(
            os.path.expanduser(os.environ.get("XDG_CACHE_HOME", "~/.cache")), "mmf", "predict"
        )

    def index_gallery(self, gallery, gallery_root=None, live_id=None, titles=None):
        """The ``GalleryIndex`` of ``gallery`` (a folder, a gallery list or a list of
        ``GalleryItem``): read from the cache when its fingerprint matches, else encoded and
        cached. ``titles``: a title file (``read_texts``) or ``{image id: title}``; None:
        the gallery's own title file, when the model reads titles (module docstring)."""
        items = gallery_items(gallery, gallery_root, live_id)
        items = self._with_titles(items, gallery, titles)
        source = [os.path.abspath(gallery) if isinstance(gallery, str) else None, live_id]
        fingerprint = self._fingerprint(items, source)
        path = os.path.join(self.cache_dir, f"gallery-{_digest(fingerprint['key'])[:16]}.pt")
        cached = _read_index(path)
        if cached is not None and cached["fingerprint"] == fingerprint:
            logger.info("gallery index reused: %s (%d images)", path, len(cached["paths"]))
            return _index_of(cached, items, path, reused=True)
        samples = _Samples(self, items, "gallery")
        encoded = encode_gallery(self.model, self._loader(samples), self.device,
                                 progress=False, global_gallery=True, texts=self.texts)
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

    def read_boxes(self, path, clips):
        """The box json at ``path`` ({frame_id: [[x1, y1, x2, y2], ...]}, the test box file's
        layout) as a ``BoxTable`` for ``clips``: a frame id that no clip has is an error."""
        if self.box_settings.mode is None:
            raise ConfigError(
                f"boxes {path}: the model has no box_mode (model_config.rice.box_mode is null), "
                "so boxes would change nothing"
            )
        return read_box_json(path, frame_ids=[f for clip in clips for f in clip.frame_ids])

    def inputs(self, clip):
        """What the model reads of ``clip``: ``{"asr": given | none | not read, "boxes": None
        (no box_mode) or {"box_mode", "box_rule", "frames_with_box", "frames_full_frame"}}``,
        counted over the frames it encodes."""
        asr = "given" if clip.asr and clip.asr.strip() else "none"
        report = {"asr": asr if "asr" in self.texts else "not read", "boxes": None}
        settings = self.box_settings
        if settings.mode is None:
            return report
        keep = self.processors["masked_video_processor"].select(len(clip.frames))
        has_box = [False] * len(clip.frames)
        if clip.boxes is not None:
            has_box = TableBoxes(clip.boxes, clip.frame_ids).has_box(settings.rule)
        boxed = sum(has_box[i] for i in keep)
        report["boxes"] = {"box_mode": settings.mode, "box_rule": settings.rule,
                           "frames_with_box": boxed, "frames_full_frame": len(keep) - boxed}
        return report

    def predict(self, clips, index, topk=10):
        """``{clip name: [Match, ...]}`` (best first, at most ``topk``) for ``clips`` (paths
        of videos or frame folders, or ``Clip``s), ranked against ``index``."""
        clips = [clip if isinstance(clip, Clip) else read_clip(clip) for clip in clips]
        if not index.items:
            raise DataError("the gallery has no readable image")
        for clip in clips:
            self._check_clip(clip)
        samples = _Samples(self, clips, "query")
        encoded = encode_queries(self.model, self._loader(samples), self.device,
                                 progress=False, global_gallery=True, texts=self.texts)
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
        sample = _Samples(self, [clip], "query")[0]
        frames = [f for f, keep in zip(sample["video"], sample["video_temporal_mask"],
                                       strict=True) if keep]
        top = matches[:TOP]
        gallery = _Samples(self, [GalleryItem(m.path) for m in top], "gallery")
        images = {m.image_id: gallery[i]["image"] for i, m in enumerate(top)}
        ranking = [(m.image_id, m.score) for m in top]
        plot_rankings(path, clip.name, frames, [("top", ranking)], images)
        return path

    def _check_clip(self, clip):
        if clip.asr is not None and "asr" not in self.texts:
            raise ConfigError(
                f"clip {clip.name}: ASR given, but the model does not read ASR (it reads "
                f"{list(self.texts) or 'no text'}; model_config.rice.text)"
            )
        if clip.boxes is not None and self.box_settings.mode is None:
            raise ConfigError(
                f"clip {clip.name}: boxes given, but the model has no box_mode "
                "(model_config.rice.box_mode is null), so boxes would change nothing"
            )
        report = self.inputs(clip)["boxes"]
        if report is not None and report["frames_full_frame"]:
            logger.warning(
                "clip %s: %d of %d encoded frames have no box and stay whole (box_mode %s)",
                clip.name, report["frames_full_frame"],
                report["frames_full_frame"] + report["frames_with_box"], report["box_mode"],
            )

    def _with_titles(self, items, gallery, titles):
        """``items`` with the titles of ``titles`` (or the gallery's own title file)."""
        if "title" not in self.texts:
            if titles is not None:
                raise ConfigError(
                    f"titles given, but the model does not read titles (it reads "
                    f"{list(self.texts) or 'no text'}; model_config.rice.text)"
                )
            return items
        if titles is None and isinstance(gallery, str):
            titles = self._title_file(gallery)
        if isinstance(titles, str):
            titles = read_texts(titles)
        if titles is None:
            return items
        titles = {normalize_id(key): value for key, value in titles.items()}
        items = [dataclasses.replace(item, title=titles.get(item.image_id, item.title))
                 for item in items]
        logger.info("titles for %d of %d gallery images",
                    sum(bool(item.title and item.title.strip()) for item in items), len(items))
        return items

    def _title_file(self, gallery):
        if os.path.isdir(gallery):
            found = [os.path.join(gallery, n) for n in TITLE_FILES
                     if os.path.isfile(os.path.join(gallery, n))]
            if len(found) > 1:
                raise DataError(f"gallery {gallery} holds both {' and '.join(TITLE_FILES)}; "
                                "keep one or pass the titles file")
            return found[0] if found else None
        root = os.path.dirname(os.path.dirname(os.path.abspath(gallery)))
        return find_annotation_file(root, self.dataset_node.get("title_file"),
                                    "dataset_config.title_file", required=False)

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
            "titles": _digest([item.title for item in items]),
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


def read_texts(path):
    """``{id: text}`` of a title or ASR file: ``<id or file name><TAB><text>`` lines (the
    LPR4M title / ASR files' layout) or, for ``.json``, an object ``{id or file name: text}``;
    keys are compared as ids (``normalize_id``)."""
    if not path.lower().endswith(".json"):
        return read_text_map(path)
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DataError(f"{path}: expected an object {{id or file name: text}} of strings")
    return {normalize_id(key): value for key, value in data.items()}


def clip_id(clip):
    """The id an ASR file names ``clip`` by: its video's stem or its frame folder's name."""
    return normalize_id(os.path.normpath(clip.name))


def describe_inputs(report):
    """One console line of ``Predictor.inputs``: the ASR, and the boxes or the full frames."""
    parts = [] if report["asr"] == "not read" else [f"asr: {report['asr']}"]
    boxes = report["boxes"]
    if boxes is not None:
        total = boxes["frames_with_box"] + boxes["frames_full_frame"]
        if boxes["frames_with_box"] == 0:
            parts.append(f"boxes ({boxes['box_mode']}): none, full frames used")
        else:
            parts.append(
                f"boxes ({boxes['box_mode']}, {boxes['box_rule']}): {boxes['frames_with_box']} "
                f"of {total} frames, {boxes['frames_full_frame']} on the full frame"
            )
    return "; ".join(parts)


def write_predictions(path, matches):
    """``{clip: [{image_id, path, score}, ...]}`` as json, atomically."""
    data = {clip: [dataclasses.asdict(m) for m in ranked] for clip, ranked in matches.items()}
    text = json.dumps(data, indent=1) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def format_matches(matches, notes=None):
    """The console table: per clip, its ``notes`` line (``describe_inputs``) if any, then one
    line per match (rank, score, image id, path)."""
    lines = []
    for clip, ranked in matches.items():
        lines.append(f"{clip}")
        if notes and notes.get(clip):
            lines.append(f"  {notes[clip]}")
        lines.append(f"  {'rank':>4}  {'score':>7}  image")
        for rank, match in enumerate(ranked, start=1):
            lines.append(f"  {rank:>4}  {match.score:7.4f}  {match.image_id}  ({match.path})")
    return "\n".join(lines)


class _Samples(VideoToShopSamples, torch.utils.data.Dataset):
    """Clips (``kind="query"``) or gallery items as the videotoshop test samples are made
    (the predictor's processors, text tokenizer and box settings; no augmentation). Ids are
    item positions; a gallery image that cannot be read is logged and dropped (the collator
    skips None)."""

    dataset_name = "predict"
    use_augments = False

    def __init__(self, predictor, items, kind):
        for key, processor in predictor.processors.items():
            setattr(self, key, processor)
        self.text_processor = predictor.text_processor
        self.text_sides = predictor.texts
        self.box_settings = predictor.box_settings
        self.items = items
        self.kind = kind

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        item = self.items[index]
        sample = Sample()
        if self.kind == "query":
            sample.update(self._video_fields(item.frames, self.clip_boxes(item)))
            sample.video_id = str(index)
            sample.update(self._text_fields(asr=item.asr))
            return sample
        try:
            sample.update(self._image_fields(item.path))
        except UnreadableImageError as error:
            logger.warning("skipping unreadable gallery image %s: %s", item.path, error)
            return None
        sample.image_id = str(index)
        sample.update(self._text_fields(title=item.title))
        return sample

    def clip_boxes(self, clip):
        if clip.boxes is None or self.box_settings.mode is None:
            return None
        return TableBoxes(clip.boxes, clip.frame_ids)

    def read_image(self, ref, decode="pil"):
        if isinstance(ref, Image.Image):
            ref = _PNGFrame(ref)
        return load_image(ref, decode)

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
