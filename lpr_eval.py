"""Evaluate a RICE run on the LPR4M test set: each query clip against its livestream's gallery.

    python lpr_eval.py --config_file save/lpr_rice_vic/config.yaml [--checkpoint FILE]
        [--data_dir DIR] [--batch_size 32] [--num_workers 4] [--device cpu|cuda]
        [--conditional FILE] [--rerank_topk K] [--rerank_fusion pmd|sum]
        [--rerank_weight BETA|auto] [--boxes none|gt|FILE] [--text none|asr|title|both]
        [--topk 10] [--out DIR] [--visualize N] [--bootstrap_resamples 1000] [--seed 0]

Prints the checkpoint evaluated (by default <model>_final.pth next to the config), R@1/3/5/10,
mAP and median rank with 95 % bootstrap intervals of R@1 and mAP (and the re-ranked ones with
--rerank_topk: by the PMD score, or by ICL logit + BETA * PMD score with --rerank_fusion sum,
BETA chosen on the validation split with --rerank_weight auto); writes metrics.json,
rankings.jsonl and embeddings.pt to --out (default
results/<experiment_name>/<checkpoint stem>-<path hash>). See mmf/evaluation/.

--boxes (a model with model_config.rice.box_mode): the query frames' boxes, none, gt (the
dataset's test_box_file) or a predicted-box json (scripts/detect_boxes.py); default gt for a
box_mode model. Frames without a box stay whole; the report counts them.
--text (a model with model_config.rice.text): the texts it reads, none, asr (the clips'),
title (the shop images') or both; default: those it was trained with. The report gives their
coverage and warns when titles may leak the answer.

    torchrun --nproc_per_node=N lpr_eval.py ...   # N processes split the encoding; same outputs
"""
import sys

from mmf_cli.evaluate import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:], "videotoshop", global_gallery=False, description=__doc__))
