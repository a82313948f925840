"""``mmf_predict``: the top-k shop images of a gallery for each new clip (see ``mmf.predict``).

    mmf_predict --run save/lpr_rice_vic_vim_rec --gallery shop_images/ --clips clip.mp4 frames/ \\
        --topk 10 --out_dir predictions --picture

Prints a table per clip and writes ``<out_dir>/predictions.json`` ({clip: [{image_id, path,
score}, ...]}, best first) and, with ``--picture``, ``<out_dir>/picture_<n>_<clip>.png``.
The gallery index is cached in ``--cache_dir`` and reused while the model and gallery files
are unchanged.

For a model that reads text (``model_config.rice.text``): ``--asr TEXT`` (one clip) or
``--asr_file`` (``<clip><TAB><text>`` lines or json; a clip is its video's stem or its frame
folder's name) and ``--titles`` (``<image file><TAB><title>`` lines or json; default:
``titles.tsv`` / ``titles.json`` in a gallery folder, the dataset's ``title_file`` for a list).
For a model with a ``box_mode``: ``--boxes`` (a box json of the clips' frames, the test box
file's layout; a frame id is the frame file's stem, ``<video stem>-<NNNN>`` for the n-th
1 fps frame of a video). Each clip's table says what it used: its ASR, and how many encoded
frames had a box or stayed whole.
"""
import argparse
import os
import re
import sys

from mmf.common.errors import MMFError
from mmf.evaluation.run import default_device
from mmf.predict import (
    Predictor,
    clip_id,
    describe_inputs,
    format_matches,
    read_clip,
    read_texts,
    write_predictions,
)
from mmf.utils.logger import setup_logger

PREDICTIONS_FILE = "predictions.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run folder or its config.yaml")
    parser.add_argument("--checkpoint", default=None,
                        help="model weights (default: <model>_final.pth next to the config)")
    parser.add_argument("--gallery", required=True,
                        help="a folder of shop images or an LPR4M gallery list file")
    parser.add_argument("--gallery_root", default=None,
                        help="folder the gallery list's paths are relative to (the list's)")
    parser.add_argument("--live_id", default=None, help="keep this livestream of a gallery list")
    parser.add_argument("--clips", nargs="+", required=True,
                        help="videos (decoded at 1 fps) or folders of frames")
    asr = parser.add_mutually_exclusive_group()
    asr.add_argument("--asr", default=None, help="the clip's ASR text (a text model; one clip)")
    asr.add_argument("--asr_file", default=None,
                     help="<clip><TAB><ASR> lines or a json {clip: ASR} (a text model)")
    parser.add_argument("--titles", default=None,
                        help="<image file><TAB><title> lines or a json {image file: title} "
                             "(a text model; default: the gallery's titles.tsv / titles.json)")
    parser.add_argument("--boxes", default=None,
                        help="box json {frame_id: [[x1, y1, x2, y2], ...]} of the clips' "
                             "frames (a model with a box_mode)")
    parser.add_argument("--topk", type=int, default=10, help="shop images per clip (10)")
    parser.add_argument("--out_dir", default="predictions", help="output folder (predictions)")
    parser.add_argument("--picture", action="store_true",
                        help="also draw each clip's frames and its top 5 (PNG)")
    parser.add_argument("--cache_dir", default=None,
                        help="gallery index cache (default ~/.cache/mmf/predict)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda[:N]")
    parser.add_argument("--batch_size", type=int, default=32, help="images or clips per batch")
    parser.add_argument("--num_workers", type=int, default=0, help="data loader processes (0)")
    args = parser.parse_args(argv)
    if args.topk < 1 or args.batch_size < 1 or args.num_workers < 0:
        parser.error("--topk and --batch_size must be >= 1, --num_workers >= 0")
    if args.asr is not None and len(args.clips) > 1:
        parser.error("--asr is the ASR of one clip; give several clips theirs with --asr_file")
    return args


def read_clips(args, predictor):
    """The ``Clip`` s of ``--clips`` with their ``--asr`` / ``--asr_file`` and ``--boxes``."""
    clips = [read_clip(path) for path in args.clips]
    texts = read_texts(args.asr_file) if args.asr_file else {}
    for clip in clips:
        clip.asr = args.asr if args.asr is not None else texts.get(clip_id(clip))
    if args.boxes:
        table = predictor.read_boxes(args.boxes, clips)
        for clip in clips:
            clip.boxes = table
    return clips


def main(argv=None):
    args = parse_args(argv)
    setup_logger()
    try:
        predictor = Predictor(args.run, args.checkpoint, args.device, args.batch_size,
                              args.num_workers, args.cache_dir)
        index = predictor.index_gallery(args.gallery, args.gallery_root, args.live_id,
                                        args.titles)
        clips = read_clips(args, predictor)
        matches = predictor.predict(clips, index, args.topk)
        notes = {clip.name: describe_inputs(predictor.inputs(clip)) for clip in clips}
        os.makedirs(args.out_dir, exist_ok=True)
        write_predictions(os.path.join(args.out_dir, PREDICTIONS_FILE), matches)
        if args.picture:
            for number, clip in enumerate(clips):
                name = re.sub(r"[^\w.-]+", "_", os.path.basename(os.path.normpath(clip.name)))
                path = os.path.join(args.out_dir, f"picture_{number:03d}_{name}.png")
                predictor.picture(clip, matches[clip.name], path)
    except MMFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_matches(matches, notes))
    if index.skipped:
        print(f"{len(index.skipped)} unreadable gallery images left out: {index.skipped[:5]}")
    print(f"predictions written to {os.path.join(args.out_dir, PREDICTIONS_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
