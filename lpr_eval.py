"""Evaluate a RICE run on the LPR4M test set: each query clip against its livestream's gallery.

    python lpr_eval.py --config_file save/lpr_rice_vic/config.yaml [--checkpoint FILE]
        [--data_dir DIR] [--batch_size 32] [--num_workers 4] [--device cpu|cuda]
        [--conditional FILE] [--rerank_topk K] [--topk 10] [--out DIR] [--visualize N]

Prints R@1/3/5/10, mAP and median rank (and the PMD re-ranked ones with --rerank_topk);
writes metrics.json, rankings.jsonl and embeddings.pt to --out (default
results/<experiment_name>). See mmf/evaluation/.
"""
import sys

from mmf_cli.evaluate import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:], "videotoshop", global_gallery=False, description=__doc__))
