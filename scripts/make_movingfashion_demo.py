"""Write a small MovingFashion-format dataset (the SEAM release layout) from real photos.

The products and the rendering are those of ``make_demo_data.py``; videos are encoded with
PyAV (H.264, no ffmpeg binary). Layout under ``--out``::

    videos/<video stem>.mp4     portrait videos, --video_fps frames per second
    imgs/<image stem>.jpg       one clean shop image per product
    train.json                  {image key: {"img_path", "source", "video_paths": [1-2 videos]}}
    test.json                   {key: {"img_path", "source", "video_paths": [one video]}}

One test video shows two products (two test.json entries name it), as in the real release.
``--num_corrupt`` adds test videos whose bytes are not a video and ``--num_missing`` test
entries whose video file does not exist, to exercise the error report of
``prepare_movingfashion.py``.

    python scripts/make_movingfashion_demo.py --out demo_mf --seed 0
    python prepare_movingfashion.py --data_root demo_mf
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import av

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_demo_data as demo  # noqa: E402

TAG_MF = 100


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train_products", type=int, default=16)
    parser.add_argument("--num_test_products", type=int, default=8)
    parser.add_argument(
        "--seconds", type=float, nargs=2, default=(10.0, 16.0), metavar=("MIN", "MAX")
    )
    parser.add_argument("--video_fps", type=int, default=5)
    parser.add_argument(
        "--num_corrupt", type=int, default=0, help="test videos that are not decodable"
    )
    parser.add_argument(
        "--num_missing", type=int, default=0, help="test entries whose video file is absent"
    )
    return parser.parse_args(argv)


def write_video(frames, path, fps):
    """Encodes PIL frames to an H.264 mp4, single-threaded: the bytes depend only on the frames."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.options = {"crf": "26", "preset": "veryfast", "threads": "1"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _name(rng):
    return rng.bytes(8).hex()


def generate(args):
    start_time = time.time()
    out = Path(args.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    rng = demo._rng(args.seed, TAG_MF)
    photos = demo.load_source_photos(args.seed)
    backgrounds = demo.load_backgrounds()
    total = args.num_train_products + args.num_test_products
    extras = list(range(total, total + args.num_corrupt + args.num_missing))
    products = demo.build_products(photos, total + len(extras), args.seed)
    context = {
        "products": products,
        "photos": photos,
        "backgrounds": backgrounds,
        "patch_photos": [p for p in photos.values() if p.ndim == 3],
    }
    jobs = 0

    def make_video(product_index, shelf):
        nonlocal jobs
        num_frames = int(rng.uniform(*args.seconds) * args.video_fps)
        video = int(rng.integers(len(backgrounds)))
        job = {
            "seed": args.seed + 7919,
            "index": jobs,
            "product": product_index,
            "shelf": shelf,
            "background": (
                video,
                int(rng.integers(0, backgrounds[video].shape[2] - demo.FRAME_W + 1)),
                bool(rng.random() < 0.5),
                int(rng.integers(0, len(backgrounds[video]))),
            ),
            "num_frames": num_frames,
        }
        jobs += 1
        frames, _ = demo.render_frames(job, context)
        path = f"videos/{_name(rng)}.mp4"
        write_video(frames, out / path, args.video_fps)
        return path

    def make_image(product_index):
        path = f"imgs/{_name(rng)}.jpg"
        demo.write_shop_image(products[product_index], str(out / path), rng)
        return path

    sources = ("hard", "regular")
    train = {}
    for index in range(args.num_train_products):
        videos = [make_video(index, []) for _ in range(1 + int(rng.random() < 0.3))]
        image = make_image(index)
        train[Path(image).stem] = {
            "img_path": image,
            "source": sources[int(rng.random() < 0.7)],
            "video_paths": videos,
        }

    test = {}
    test_ids = list(range(args.num_train_products, total))
    for rank, index in enumerate(test_ids):
        image = make_image(index)
        source = sources[int(rng.random() < 0.7)]
        if rank == 1:
            # A video showing two products: this entry reuses the previous product's video.
            video = next(iter(test.values()))["video_paths"][0]
        else:
            partner = test_ids[1] if rank == 0 and len(test_ids) > 1 else None
            video = make_video(index, [partner] if partner is not None else [])
        test[f"{len(test):05d}"] = {"img_path": image, "source": source, "video_paths": [video]}
    for rank, index in enumerate(extras):
        path = f"videos/{_name(rng)}.mp4"
        if rank < args.num_corrupt:
            (out / path).write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(2048))
        test[f"{len(test):05d}"] = {
            "img_path": make_image(index),
            "source": "regular",
            "video_paths": [path],
        }

    for name, entries in (("train.json", train), ("test.json", test)):
        with open(out / name, "w", encoding="utf-8") as handle:
            json.dump(entries, handle, indent=1)
            handle.write("\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    num_videos = len(list((out / "videos").glob("*.mp4")))
    print(
        f"make_movingfashion_demo: {out} seed={args.seed}: {num_videos} videos, "
        f"{len(train)} train products, {len(test)} test entries "
        f"({args.num_corrupt} corrupt, {args.num_missing} missing videos), "
        f"{size / 1e6:.1f} MB, {time.time() - start_time:.1f} s"
    )


def main(argv=None):
    generate(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
