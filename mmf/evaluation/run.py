"""The evaluation driver: encode once, rank, re-rank (optional), write the reports.

Python API (what ``lpr_eval.py`` / ``movingfashion_eval.py`` do)::

    from mmf.evaluation.loading import load_eval_config, load_eval_data
    from mmf.evaluation.run import EvalOptions, run_evaluation

    config, name = load_eval_config("save/exp/config.yaml", "videotoshop", data_dir=None)
    data = load_eval_data(config, name, global_gallery=False)
    options = EvalOptions("save/exp/config.yaml", rerank_topk=10)
    report, out_dir = run_evaluation(options, config, name, data)

Outputs are deterministic for a checkpoint and data: no augmentation at test time, loaders
in dataset order, ties broken by gallery order.
"""
import dataclasses
import logging
import os

import torch

from mmf.common.errors import ConfigError
from mmf.evaluation.encoding import (
    EMBEDDINGS_FILE,
    TokenStore,
    encode_gallery,
    encode_queries,
    make_loader,
    save_embeddings,
)
from mmf.evaluation.loading import default_checkpoint, load_eval_model, read_conditional, restrict
from mmf.evaluation.ranking import rank_queries
from mmf.evaluation.reports import (
    METRICS_FILE,
    RANKINGS_FILE,
    query_info,
    sections_of,
    write_metrics,
    write_rankings,
)
from mmf.evaluation.rerank import PMDReranker, require_pair_score, rerank_top
from mmf.utils.env import set_seed

logger = logging.getLogger(__name__)


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclasses.dataclass
class EvalOptions:
    """How to evaluate (the command-line options of the evaluation scripts).

    ``config_file``: the run's config.yaml; ``checkpoint``: weights (default
    ``<env.save_dir>/<model>_final.pth``, else next to the config); ``conditional``: file of
    video ids to keep; ``rerank_topk``: re-rank the ICL top K with the PMD score (0: off);
    ``topk``: ids kept per query in rankings.jsonl; ``out``: output folder (default
    ``results/<experiment_name>``); ``visualize``: draw the first N queries.
    """

    config_file: str
    checkpoint: str = None
    batch_size: int = 32
    num_workers: int = 4
    device: str = dataclasses.field(default_factory=default_device)
    conditional: str = None
    rerank_topk: int = 0
    topk: int = 10
    out: str = None
    visualize: int = 0
    seed: int = 0


def run_evaluation(options, config, dataset_name, data, progress=True):
    """Encode, rank, re-rank (optional), write the files; returns ``(report, out_dir)``
    where ``report`` is what ``metrics.json`` holds. ``options`` is an ``EvalOptions``,
    ``data`` an ``EvalData`` (``mmf.evaluation.loading``)."""
    set_seed(options.seed)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    out_dir = options.out or os.path.join("results", str(config.training.experiment_name))
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = options.checkpoint or default_checkpoint(config, options.config_file)
    model = load_eval_model(config, checkpoint, device)
    logger.info("evaluating %s on %s; outputs in %s", checkpoint, dataset_name, out_dir)

    data_dir = str(config.dataset_config[dataset_name].get("data_dir") or "")
    evaluated, keep = data, None
    if options.conditional:
        keep = read_conditional(options.conditional, data_dir)
        evaluated = restrict(data, keep)
        logger.info(
            "--conditional %s: %d ground-truth queries kept",
            options.conditional, len(evaluated.ground_truth),
        )
    gallery, queries, reranker = _encode(model, evaluated, options, device, out_dir, progress)
    if keep is not None:
        queries = queries.subset([row for row, q in enumerate(queries.ids) if q in keep])
    save_embeddings(os.path.join(out_dir, EMBEDDINGS_FILE), checkpoint, queries, gallery)

    result = _rank(queries, gallery, evaluated, max(options.topk, options.rerank_topk), device)
    labels = {name: mapping for name, mapping in (data.labels or {}).items() if mapping}
    reranked, sections = _rerank(result, reranker, options.rerank_topk, labels)

    report = {
        "checkpoint": os.path.abspath(checkpoint),
        "config_file": os.path.abspath(options.config_file),
        "dataset": dataset_name,
        "data_dir": data_dir,
        "gallery": "global" if data.global_gallery else "per_livestream",
        "num_gallery_images": len(gallery.ids),
        "num_encoded_queries": len(queries.ids),
        "tie_rule": "equal scores keep gallery order (stable sort)",
        "missing_queries": result.missing,
        "no_positive_in_gallery": result.no_positive_in_gallery,
        **sections,
    }
    write_metrics(os.path.join(out_dir, METRICS_FILE), report)
    write_rankings(
        os.path.join(out_dir, RANKINGS_FILE), result, evaluated.ground_truth,
        query_info(queries, labels), reranked,
    )
    if options.visualize > 0:
        from mmf.evaluation.pictures import visualize_queries

        folder = os.path.join(out_dir, "visualize")
        visualize_queries(model, data, result, reranked, options.visualize, folder, device)
    return report, out_dir


def _encode(model, data, options, device, out_dir, progress):
    """Gallery and query embeddings (``Encoded``), and the ``PMDReranker`` that scored the
    query batches as they were encoded (None without ``rerank_topk``)."""
    token_store = reranker = None
    if options.rerank_topk > 0:
        require_pair_score(model)
        path = os.path.join(out_dir, "gallery_tokens.npy")
        token_store = TokenStore(path, len(data.gallery_dataset))
    try:
        gallery = encode_gallery(
            model, make_loader(data.gallery_dataset, options.batch_size, options.num_workers),
            device, token_store, progress, data.global_gallery,
        )
        if token_store is not None:
            reranker = PMDReranker(model, gallery, token_store, options.rerank_topk, device)
        queries = encode_queries(
            model, make_loader(data.query_dataset, options.batch_size, options.num_workers),
            device, reranker, progress, data.global_gallery,
        )
    finally:
        if token_store is not None:
            token_store.close()
    return gallery, queries, reranker


def _rerank(result, reranker, k, labels):
    """The PMD re-ranking of ``result`` (None without ``reranker``) and the report sections
    of both rankings (``icl``, ``pmd_rerank``)."""
    sections = {"icl": sections_of(result, labels)}
    if reranker is None:
        return None, sections
    reranked, mismatched = rerank_top(result, reranker.candidates, reranker.scores, k)
    sections["pmd_rerank"] = sections_of(reranked, labels)
    sections["pmd_rerank"]["rerank_topk"] = k
    sections["pmd_rerank"]["num_candidate_mismatch"] = mismatched
    return reranked, sections


def _rank(queries, gallery, data, topk, device):
    """ICL ranking of every ground-truth query; warns about queries without an embedding."""
    result = rank_queries(
        queries.emb, queries.ids, gallery.emb, gallery.ids, data.ground_truth,
        query_groups=None if data.global_gallery else queries.groups,
        gallery_groups=None if data.global_gallery else gallery.groups,
        topk=topk, device=device,
    )
    if result.missing:
        logger.warning(
            "%d ground-truth queries have no prediction (counted as misses), e.g. %s",
            len(result.missing), result.missing[:5],
        )
    return result
