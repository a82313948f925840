"""Evaluate a RICE run on MovingFashion: every query video against one global gallery.

    python movingfashion_eval.py --config_file save/mf_rice_vic/config.yaml [options]

Same options and outputs as lpr_eval.py. The gallery is gallery_full.txt and the ground truth
video_to_gt.json; when that file labels clips regular / hard, metrics are also reported per
label (the SEAM convention). See mmf/evaluation/.

    torchrun --nproc_per_node=N movingfashion_eval.py ...   # N processes, same outputs
"""
import sys

from mmf_cli.evaluate import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:], "movingfashion", global_gallery=True, description=__doc__))
