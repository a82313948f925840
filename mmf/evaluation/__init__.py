"""Retrieval evaluation of a trained model, one module per step.

    loading   config (run's config.yaml over the current layers), model + checkpoint, test data
    encoding  every gallery image and query clip once, batched; the float16 gallery token store
    ranking   each query against its gallery (vectorised, stable tie rule)
    metrics   R@k, mAP, median rank, per-label breakdowns
    rerank    PMD re-ranking of the ICL top K
    reports   metrics.json, rankings.jsonl, the console report
    pictures  PNG pictures of rankings and cross-attention
    run       ``EvalOptions`` and ``run_evaluation``, the driver
"""
