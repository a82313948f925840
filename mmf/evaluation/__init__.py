"""Retrieval evaluation of a trained model, one module per step.

    loading   config (run's config.yaml over the current layers), model + checkpoint, test data
    encoding  every gallery image and query clip once, batched; the float16 gallery token store
    sharding  the encoding split across torchrun ranks (whole batches), gathered in order
    ranking   each query against its gallery (vectorised, stable tie rule)
    metrics   R@k, mAP, median rank, per-label breakdowns
    rerank    re-ranking of the ICL top K: PMD score, or ICL logit + weight * PMD (weight on val)
    bootstrap seeded 95 % bootstrap intervals of R@1 / mAP and paired differences
    reports   metrics.json, rankings.jsonl, the console report
    outputs   the output folder: default name (run + checkpoint), checks, evaluation lock
    pictures  PNG pictures of rankings and cross-attention
    run       ``EvalOptions`` and ``run_evaluation``, the driver
"""
