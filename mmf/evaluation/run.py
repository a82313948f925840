"""The evaluation driver: encode once, rank, re-rank (optional), write the reports.

Python API (what ``lpr_eval.py`` / ``movingfashion_eval.py`` do)::

    from mmf.evaluation.loading import load_eval_config, load_eval_data
    from mmf.evaluation.run import EvalOptions, run_evaluation

    config, name = load_eval_config("save/exp/config.yaml", "videotoshop", data_dir=None)
    data = load_eval_data(config, name, global_gallery=False)
    options = EvalOptions("save/exp/config.yaml", rerank_topk=10, rerank_fusion="sum",
                          rerank_weight="auto")
    report, out_dir = run_evaluation(options, config, name, data)

Outputs are deterministic for a checkpoint and data: no augmentation at test time, loaders
in dataset order, ties broken by gallery order, bootstrap intervals from a seeded generator.
With ``rerank_weight="auto"`` the weight is chosen on the validation split only
(``mmf.evaluation.loading.load_val_data``); the test split never influences it.

In a process group (``torchrun --nproc_per_node=N lpr_eval.py ...``) every rank calls
``run_evaluation``: each encodes (and re-ranks) its shard of the gallery and of the queries
(``mmf.evaluation.sharding``), rank 0 gathers them, ranks once, writes the files and returns
``(report, out_dir)``; the other ranks return ``(None, out_dir)``. The outputs are those of
one process. Only rank 0 holds the output folder's lock; every step that may fail on one rank
is followed by ``raise_together``, so a failure ends every rank instead of leaving some waiting.
"""
import contextlib
import dataclasses
import logging
import os

import torch

from mmf.common.errors import ConfigError
from mmf.evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from mmf.evaluation.encoding import (
    EMBEDDINGS_FILE,
    TokenStore,
    encode_gallery,
    encode_queries,
    make_loader,
    save_embeddings,
)
from mmf.evaluation.loading import (
    default_checkpoint,
    load_eval_model,
    load_val_data,
    read_conditional,
    restrict,
)
from mmf.evaluation.outputs import claim_out_dir, default_out_dir
from mmf.evaluation.ranking import rank_queries
from mmf.evaluation.reports import (
    METRICS_FILE,
    RANKINGS_FILE,
    query_info,
    r1_change,
    sections_of,
    write_metrics,
    write_rankings,
)
from mmf.evaluation.rerank import (
    FUSIONS,
    Fusion,
    PMDReranker,
    choose_weight,
    icl_logit_scale,
    require_pair_score,
    rerank_top,
)
from mmf.evaluation.sharding import gather_encoded, gather_rerank_scores, shard, share_tokens
from mmf.evaluation.text_coverage import TEXT_CHOICES, coverage, text_sides
from mmf.utils.distributed import is_main, raise_together
from mmf.utils.env import set_seed

logger = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_SUM_WEIGHT = 1.0


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclasses.dataclass
class EvalOptions:
    """How to evaluate (the command-line options of the evaluation scripts).

    ``config_file``: the run's config.yaml; ``checkpoint``: weights (default
    ``<model>_final.pth`` next to the config, else in ``env.save_dir``); ``conditional``: file
    of video ids to keep; ``rerank_topk``: re-rank the ICL top K (0: off); ``rerank_fusion``:
    ``pmd`` (the PMD score alone) or ``sum`` (``s^2 * cos + weight * PMD``);
    ``rerank_weight``: the ``sum`` weight, a number or ``"auto"`` (chosen on the validation
    split; default 1.0); ``topk``: ids kept per query in rankings.jsonl; ``out``: output folder
    (default ``results/<experiment_name>/<checkpoint stem>-<hash>``); ``visualize``: draw the
    first N queries; ``bootstrap_resamples``: resamples of the 95 % intervals; ``seed``: of
    the run and of the bootstrap; ``text``: ``none``, ``asr``, ``title`` or ``both``, the texts
    a text model reads (default: those it was trained with; ``mmf.evaluation.text_coverage``).
    """

    config_file: str
    checkpoint: str = None
    batch_size: int = 32
    num_workers: int = 4
    device: str = dataclasses.field(default_factory=default_device)
    conditional: str = None
    rerank_topk: int = 0
    rerank_fusion: str = "pmd"
    rerank_weight: object = None
    topk: int = 10
    out: str = None
    visualize: int = 0
    bootstrap_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    text: str = None


def check_options(options):
    """``ConfigError`` in one line for option values that cannot work, before anything is
    loaded."""
    for name, least in (("batch_size", 1), ("num_workers", 0), ("rerank_topk", 0), ("topk", 1),
                        ("visualize", 0), ("bootstrap_resamples", 1)):
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"--{name} must be an integer >= {least}, got {value!r}")
    if options.text is not None and options.text not in TEXT_CHOICES:
        raise ConfigError(f"--text must be one of {TEXT_CHOICES}, got {options.text!r}")
    fusion = options.rerank_fusion
    if fusion not in FUSIONS:
        raise ConfigError(f"--rerank_fusion must be one of {FUSIONS}, got {fusion!r}")
    if options.rerank_fusion == "sum" and options.rerank_topk == 0:
        raise ConfigError("--rerank_fusion sum re-ranks the ICL top K: set --rerank_topk K > 0")
    weight = options.rerank_weight
    if weight is not None and options.rerank_fusion != "sum":
        raise ConfigError(
            f"--rerank_weight {weight} weighs the PMD score of --rerank_fusion sum; "
            f"--rerank_fusion is {options.rerank_fusion!r}"
        )
    if weight is not None and weight != AUTO and not isinstance(weight, (int, float)):
        raise ConfigError(f"--rerank_weight must be a number or 'auto', got {weight!r}")


def run_evaluation(options, config, dataset_name, data, progress=True):
    """Encode, rank, re-rank (optional), write the files; returns ``(report, out_dir)``
    where ``report`` is what ``metrics.json`` holds (None on ranks other than 0).
    ``options`` is an ``EvalOptions``, ``data`` an ``EvalData`` (``mmf.evaluation.loading``)."""
    check_options(options)
    set_seed(options.seed)
    device = torch.device(options.device)
    with contextlib.ExitStack() as claim:
        checkpoint, out_dir, val, model = raise_together(
            lambda: _prepare(options, config, dataset_name, data, device, claim)
        )
        logger.info("evaluating %s on %s; outputs in %s", checkpoint, dataset_name, out_dir)
        texts = text_sides(options.text, model)
        context = _Context(model, options, device, out_dir, progress and is_main(), texts)
        fusion, search = _fusion(context, val)
        sections = _evaluate(context, config, dataset_name, data, fusion, checkpoint)
        if sections is None:
            return None, out_dir
        report = {"checkpoint": checkpoint, "config_file": os.path.abspath(options.config_file)}
        report.update(sections)
        if search is not None:
            report["pmd_rerank"]["weight_search"] = search
        write_metrics(os.path.join(out_dir, METRICS_FILE), report)
    return report, out_dir


def _prepare(options, config, dataset_name, data, device, claim):
    """The checkpoint, the output folder (claimed by rank 0 through the ``ExitStack``
    ``claim``; created by the other ranks for their token files), the validation data (with
    ``rerank_weight`` auto, else None; boxes unless the test ``data`` has none) and the
    loaded model."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    checkpoint = os.path.abspath(
        options.checkpoint or default_checkpoint(config, options.config_file)
    )
    out_dir = options.out or default_out_dir(config.training.experiment_name, checkpoint)
    if is_main():
        claim.enter_context(claim_out_dir(out_dir))
    elif options.rerank_topk > 0:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--out {out_dir}: cannot write there ({err.strerror})") from None
    val = None
    if options.rerank_weight == AUTO:
        boxes = data.boxes["source"] if data.boxes else "none"
        val = load_val_data(config, dataset_name, data.global_gallery, boxes)
    return checkpoint, out_dir, val, load_eval_model(config, checkpoint, device)


@dataclasses.dataclass
class _Context:
    """What every step of one evaluation uses."""

    model: torch.nn.Module
    options: EvalOptions
    device: torch.device
    out_dir: str
    progress: bool
    texts: tuple = ()


def _evaluate(context, config, dataset_name, data, fusion, checkpoint):
    """Encode and rank the test split, write embeddings.pt, rankings.jsonl (and pictures);
    returns the report's entries (None on ranks other than 0, which only encode)."""
    options, out_dir = context.options, context.out_dir
    data_dir = str(config.dataset_config[dataset_name].get("data_dir") or "")
    evaluated, keep = data, None
    if options.conditional:
        keep = read_conditional(options.conditional, data_dir)
        evaluated = restrict(data, keep)
        logger.info(
            "--conditional %s: %d ground-truth queries kept",
            options.conditional, len(evaluated.ground_truth),
        )
    gallery, queries, reranker = _encode(context, evaluated)
    text_section, asr_only = _text_coverage(context, evaluated)
    if not is_main():
        return None
    if keep is not None:
        queries = queries.subset([row for row, q in enumerate(queries.ids) if q in keep])
    save_embeddings(os.path.join(out_dir, EMBEDDINGS_FILE), checkpoint, queries, gallery)

    topk = max(options.topk, options.rerank_topk)
    result = _rank(queries, gallery, evaluated, topk, context.device)
    labels = {name: mapping for name, mapping in (data.labels or {}).items() if mapping}
    bootstrap = {"num_resamples": options.bootstrap_resamples, "seed": options.seed}
    reranked, sections = _rerank(result, reranker, options, fusion, labels, bootstrap)
    report = {
        "dataset": dataset_name,
        "data_dir": data_dir,
        "gallery": "global" if data.global_gallery else "per_livestream",
        "num_gallery_images": len(gallery.ids),
        "num_encoded_queries": len(queries.ids),
        "tie_rule": "equal scores keep gallery order (stable sort)",
        "bootstrap": {**bootstrap, "level": DEFAULT_LEVEL, "resampled": "queries"},
        "missing_queries": result.missing,
        "no_positive_in_gallery": result.no_positive_in_gallery,
        **sections,
    }
    if data.boxes is not None:
        report["boxes"] = data.boxes
    if data.breakdown_sources:
        report["breakdown_sources"] = data.breakdown_sources
    if text_section is not None:
        if asr_only is not None:
            asr_result = _rank(asr_only[1], asr_only[0], evaluated, topk, context.device)
            text_section["asr_only"] = sections_of(asr_result, {}, bootstrap)
        report["text"] = text_section
    write_rankings(
        os.path.join(out_dir, RANKINGS_FILE), result, evaluated.ground_truth,
        query_info(queries, labels), reranked,
    )
    if options.visualize > 0:
        from mmf.evaluation.pictures import visualize_queries

        folder = os.path.join(out_dir, "visualize")
        visualize_queries(
            context.model, data, result, reranked, options.visualize, folder, context.device
        )
    return report


def _text_coverage(context, data):
    """The report's ``text`` section (None for a model without text) and, when titles may
    leak the answer and are read, the (gallery, queries) encoded with the ASR alone (every
    rank encodes its share)."""
    if not getattr(context.model, "text_inputs", ()):
        return None, None
    section = {"sides": list(context.texts), "coverage": coverage(data)}
    if not section["coverage"]["title_leak"]:
        return section, None
    logger.warning(
        "titles cover %.1f %% of the ground-truth images and %.1f %% of the other gallery "
        "images: title results may leak the answer",
        section["coverage"]["ground_truth_with_title"]["percent"],
        section["coverage"]["other_gallery_with_title"]["percent"],
    )
    if "title" not in context.texts:
        return section, None
    asr = tuple(side for side in context.texts if side == "asr")
    plain = dataclasses.replace(
        context, options=dataclasses.replace(context.options, rerank_topk=0), texts=asr
    )
    gallery, queries, _ = _encode(plain, data)
    return section, (gallery, queries)


def _fusion(context, val):
    """The ``Fusion`` of the re-ranking (None without one) and, with ``rerank_weight``
    ``auto``, the weight search on ``val``: ``{"split", "num_queries", "grid"}``."""
    options = context.options
    if options.rerank_topk == 0:
        return None, None
    if options.rerank_fusion == "pmd":
        return Fusion(), None
    scale = icl_logit_scale(context.model)
    if options.rerank_weight != AUTO:
        weight = DEFAULT_SUM_WEIGHT if options.rerank_weight is None else options.rerank_weight
        return Fusion(scale, float(weight)), None
    gallery, queries, reranker = _encode(context, val)
    return raise_together(lambda: _choose_weight(context, val, gallery, queries, reranker, scale))


def _choose_weight(context, val, gallery, queries, reranker, scale):
    """The ``sum`` fusion chosen on the validation ranking, and the search (rank 0; the other
    ranks get ``(None, None)``)."""
    if not is_main():
        return None, None
    k = context.options.rerank_topk
    result = _rank(queries, gallery, val, k, context.device)
    weight, grid = choose_weight(result, reranker.candidates, reranker.scores, k, scale)
    logger.info("--rerank_weight auto: %g (val R@1 by weight: %s)", weight, grid)
    search = {"split": "val", "num_queries": len(result.query_ids), "grid": grid}
    return Fusion(scale, weight), search


def _encode(context, data):
    """Gallery and query embeddings (``Encoded``, all of them on every rank), and the
    ``PMDReranker`` that scored the query batches as they were encoded (None without
    ``rerank_topk``). Each rank encodes its ``shard`` of both lists."""
    model, options, device, progress = (
        context.model, context.options, context.device, context.progress
    )
    gallery_part = shard(data.gallery_dataset, options.batch_size)
    query_part = shard(data.query_dataset, options.batch_size)
    token_store = reranker = None
    if options.rerank_topk > 0:
        require_pair_score(model)
        token_store = TokenStore(context.out_dir, len(gallery_part))
    try:
        gallery = gather_encoded(raise_together(lambda: encode_gallery(
            model, make_loader(gallery_part, options.batch_size, options.num_workers),
            device, token_store, progress, data.global_gallery, context.texts,
        )))
        if token_store is not None:
            token_store = share_tokens(token_store, context.out_dir)
            reranker = PMDReranker(model, gallery, token_store, options.rerank_topk, device)
        queries = gather_encoded(raise_together(lambda: encode_queries(
            model, make_loader(query_part, options.batch_size, options.num_workers),
            device, reranker, progress, data.global_gallery, context.texts,
        )))
        if reranker is not None:
            gather_rerank_scores(reranker)
    finally:
        if token_store is not None:
            token_store.close()
    return gallery, queries, reranker


def _rerank(result, reranker, options, fusion, labels, bootstrap):
    """The re-ranking of ``result`` (None without ``reranker``) and the report sections of
    both rankings (``icl``, ``pmd_rerank``)."""
    sections = {"icl": sections_of(result, labels, bootstrap)}
    if reranker is None:
        return None, sections
    k = options.rerank_topk
    reranked, mismatched = rerank_top(result, reranker.candidates, reranker.scores, k, fusion)
    section = sections_of(reranked, labels, bootstrap)
    section.update(rerank_topk=k, rerank_fusion=options.rerank_fusion)
    if options.rerank_fusion == "sum":
        section.update(rerank_weight=fusion.weight, icl_logit_scale=fusion.icl_scale)
    section["num_candidate_mismatch"] = mismatched
    section["r@1_vs_icl"] = r1_change(reranked, result, bootstrap)
    sections["pmd_rerank"] = section
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
