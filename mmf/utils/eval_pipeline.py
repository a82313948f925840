"""Retrieval evaluation of a trained model: encode once, rank, report.

Shared by ``lpr_eval.py`` (one gallery per livestream) and ``movingfashion_eval.py`` (one
global gallery). The steps:

1. ``load_eval_config``: the run's saved ``config.yaml`` on top of the current defaults
   (framework, model, dataset), with the encoders' pretrained file names set to null, since
   the checkpoint holds every weight, and ``--data_dir`` replacing a path baked into the
   config.
2. ``load_eval_model``: builds the model and loads the checkpoint strictly (ours, or the
   authors' files whose keys carry ``module.`` prefixes).
3. ``encode``: every gallery image and every query clip once, batched, with
   ``model.encode_image`` / ``model.encode_video``; the embeddings and their ids are cached
   in ``<out>/embeddings.pt``. With PMD re-ranking, gallery tokens go to a float16 memmap
   and each query batch is re-scored right after it is encoded (``PMDReranker``).
4. ``mmf.utils.retrieval`` ranks every ground-truth query; ``run_evaluation`` writes
   ``metrics.json`` and one ``rankings.jsonl`` (a line per query: ground truth, rank and the
   top-k ids with scores); ``format_report`` is the console summary.

Outputs are deterministic for a checkpoint and data: no augmentation at test time, loaders
in dataset order, ties broken by gallery order.
"""
import dataclasses
import json
import logging
import math
import os

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from mmf.common.errors import CheckpointError, ConfigError, DataError
from mmf.common.registry import registry
from mmf.utils.build import build_model
from mmf.utils.checkpoint import load_state_dict_file, strip_module_prefix
from mmf.utils.configuration import get_mmf_root, load_config, load_yaml, register_resolvers
from mmf.utils.env import set_seed, setup_imports
from mmf.utils.retrieval import (
    DEFAULT_KS,
    metrics_by_label,
    normalize_id,
    rank_queries,
    rerank_top,
    stable_topk,
    summarize,
)

logger = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.pt"
METRICS_FILE = "metrics.json"
RANKINGS_FILE = "rankings.jsonl"
REPORT_KS = DEFAULT_KS


@dataclasses.dataclass
class Encoded:
    """Embeddings of one side (queries or gallery) with their ids, in dataset order.

    ``emb`` [N, E] float32 on CPU; ``groups`` [N] live ids (None for a global gallery).
    Items the dataset skipped (``on_error: skip``) are absent.
    """

    ids: list
    groups: list
    emb: torch.Tensor

    def subset(self, rows):
        return Encoded([self.ids[r] for r in rows], [self.groups[r] for r in rows], self.emb[rows])


# ----------------------------------------------------------------------------- config, model


def load_eval_config(config_file, dataset_name, data_dir=None):
    """The saved run config merged over the current defaults, ready for evaluation.

    Returns ``(config, dataset_name)``. ``dataset_name`` falls back to the run's only dataset.
    Processors of the dataset whose type nobody registered (e.g. the original's unused BERT
    tokenizer) are dropped with a warning; the ones evaluation needs must exist.
    """
    register_resolvers()
    setup_imports()
    saved = load_config(config_file)
    model_name = saved.get("model")
    if not model_name or model_name not in (saved.get("model_config") or {}):
        raise ConfigError(f"{config_file}: needs 'model' and model_config.<model>")
    dataset_name = _dataset_name(saved, dataset_name, config_file)

    layers = [load_yaml(get_mmf_root() / "configs" / "defaults.yaml")]
    for kind, name in (("model", model_name), ("builder", dataset_name)):
        path = registry.get(kind, name).config_path()
        if path is not None:
            layers.append(load_yaml(get_mmf_root() / path))
    layers.append(saved)
    config = OmegaConf.merge(*layers)

    model_node = config.model_config[model_name]
    for key in ("image_encoder.params.pretrained_model_name", "transformer_model.pretrained_model_name"):
        if OmegaConf.select(model_node, key, default=None) is not None:
            OmegaConf.update(model_node, key, None)

    dataset_node = config.dataset_config[dataset_name]
    if data_dir is not None:
        dataset_node.data_dir = os.path.abspath(os.path.expanduser(data_dir))
    processors = dataset_node.get("processors") or {}
    known = set(registry.list("processor"))
    for key in list(processors):
        kind = processors[key].get("type") if hasattr(processors[key], "get") else None
        if kind not in known:
            logger.warning(
                "dataset_config.%s.processors.%s (type %r) is not registered; "
                "evaluation does not use it, dropped", dataset_name, key, kind,
            )
            del processors[key]
    config = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    return config, dataset_name


def _dataset_name(saved, requested, config_file):
    names = saved.get("datasets") or []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    available = list(saved.get("dataset_config") or {})
    if requested and requested in available:
        return requested
    if requested:
        raise ConfigError(
            f"{config_file}: dataset_config.{requested} is missing (the run has {available})"
        )
    if len(names) == 1:
        return names[0]
    raise ConfigError(f"{config_file}: cannot tell which dataset to evaluate among {names or available}")


def default_checkpoint(config, config_file):
    """``<env.save_dir>/<model>_final.pth``, else the same name next to ``config_file``."""
    name = f"{config.model}_final.pth"
    candidates = []
    save_dir = OmegaConf.select(config, "env.save_dir", default=None)
    if save_dir:
        candidates.append(os.path.join(os.path.expanduser(str(save_dir)), name))
    candidates.append(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise CheckpointError(f"no checkpoint found; tried {candidates} (pass --checkpoint)")


def load_eval_model(config, checkpoint, device):
    """Build ``config.model`` and load ``checkpoint`` strictly; returns the model in eval mode."""
    node = OmegaConf.merge(config.model_config[config.model], {"model": config.model})
    model = build_model(node)
    state_dict = strip_module_prefix(load_state_dict_file(checkpoint))
    state_dict = {model.format_state_key(key): value for key, value in state_dict.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{checkpoint} does not match model {config.model!r}: "
            f"{len(missing)} missing keys {missing[:8]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:8]}, {len(wrong_shape)} shape mismatches {wrong_shape[:4]}"
        )
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


# ----------------------------------------------------------------------------- encoding


def make_loader(dataset, batch_size, num_workers):
    collate_fn = getattr(dataset, "collate_fn", None) or dataset.dataset.collate_fn  # Subset
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=False,
        persistent_workers=False,
    )


def _restrict_dataset(dataset, keep):
    """The items of ``dataset`` whose clip id is in ``keep`` (all when it lists no records)."""
    records = getattr(dataset, "records", None)
    if records is None:
        return dataset
    rows = [row for row, record in enumerate(records) if normalize_id(record.video_id) in keep]
    return torch.utils.data.Subset(dataset, rows)


@torch.inference_mode()
def encode_gallery(model, loader, device, token_store=None, progress=True, global_gallery=False):
    """Image embeddings of every gallery item; gallery tokens go to ``token_store`` if given.
    Groups are the items' ``live_id`` (None for all with ``global_gallery``)."""
    ids, groups, chunks = [], [], []
    for batch in tqdm(loader, desc="gallery", unit="batch", disable=not progress):
        size = len(batch.get("image_id") or [])
        if size:
            emb, tokens = model.encode_image(batch["image"].to(device, non_blocking=True))
            chunks.append(emb.float().cpu())
            if token_store is not None:
                token_store.append(tokens)
            ids.extend(normalize_id(i) for i in batch["image_id"])
            groups.extend(_groups(batch, size, global_gallery))
    return Encoded(ids, groups, torch.cat(chunks) if chunks else torch.zeros(0, 0))


@torch.inference_mode()
def encode_queries(model, loader, device, on_batch=None, progress=True, global_gallery=False):
    """Video embeddings of every query clip; ``on_batch(ids, groups, emb, tokens, mask)`` is
    called after each batch (PMD re-ranking). Groups as in ``encode_gallery``."""
    ids, groups, chunks = [], [], []
    for batch in tqdm(loader, desc="queries", unit="batch", disable=not progress):
        size = len(batch.get("video_id") or [])
        if size:
            video = batch["video"].to(device, non_blocking=True)
            mask = batch["video_temporal_mask"].to(device, non_blocking=True)
            emb, tokens = model.encode_video(video, mask)
            batch_ids = [normalize_id(i) for i in batch["video_id"]]
            batch_groups = _groups(batch, size, global_gallery)
            if on_batch is not None:
                on_batch(batch_ids, batch_groups, emb, tokens, mask)
            chunks.append(emb.float().cpu())
            ids.extend(batch_ids)
            groups.extend(batch_groups)
    return Encoded(ids, groups, torch.cat(chunks) if chunks else torch.zeros(0, 0))


def _groups(batch, size, global_gallery):
    if global_gallery or batch.get("live_id") is None:
        return [None] * size
    return list(batch["live_id"])


class TokenStore:
    """Gallery tokens [G, T, D] in a float16 ``numpy.memmap`` at ``path`` (rows in encoding order)."""

    def __init__(self, path, capacity):
        self.path = path
        self.capacity = capacity
        self.array = None
        self.size = 0

    def append(self, tokens):
        tokens = tokens.detach().to("cpu", torch.float16).numpy()
        if self.array is None:
            shape = (self.capacity,) + tokens.shape[1:]
            self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float16, shape=shape)
        self.array[self.size : self.size + len(tokens)] = tokens
        self.size += len(tokens)

    def get(self, rows):
        """Tokens of ``rows`` (a 1-d int array) as a float16 tensor [len(rows), T, D]."""
        return torch.from_numpy(np.ascontiguousarray(self.array[rows]))

    def close(self):
        if self.array is not None:
            del self.array
            self.array = None
        if os.path.exists(self.path):
            os.remove(self.path)


def require_pair_score(model):
    if not getattr(model, "has_pair_score", False):
        raise ConfigError(
            "--rerank_topk needs a model with a PMD head (training_head_type 'pretraining' "
            "with the 'vim' task); this checkpoint's model has none"
        )


class PMDReranker:
    """Re-scores each query batch's ICL top ``k`` with ``model.pair_score`` (10 * cos).

    The candidates are the batch's top-k in its own gallery by embedding score (same tie
    rule as the final ranking); their gallery tokens come from ``token_store``. Results are
    kept by query id: ``candidates[qid]`` [k'] gallery rows, ``scores[qid]`` [k'] PMD scores.
    """

    def __init__(self, model, gallery, token_store, k, device, pair_batch=256):
        require_pair_score(model)
        self.model = model
        self.k = k
        self.device = device
        self.pair_batch = pair_batch
        self.token_store = token_store
        self.gallery_emb = gallery.emb.to(device)
        self.rows_of_group = {}
        for row, group in enumerate(gallery.groups):
            self.rows_of_group.setdefault(group, []).append(row)
        self.rows_of_group = {g: torch.as_tensor(r) for g, r in self.rows_of_group.items()}
        self.candidates = {}
        self.scores = {}

    @torch.inference_mode()
    def __call__(self, ids, groups, emb, tokens, mask):
        """Score one encoded query batch: ids [B], groups [B], emb [B,E], tokens [B,F,T,D],
        mask [B,F]."""
        positions_of_group = {}
        for position, group in enumerate(groups):
            positions_of_group.setdefault(group, []).append(position)
        pair_query, pair_rows, spans = [], [], []
        for group, positions in positions_of_group.items():
            rows = self.rows_of_group.get(group)
            if rows is None:
                continue  # rank_queries reports the missing gallery, naming the live id
            scores = emb[positions].float() @ self.gallery_emb[rows.to(self.device)].T
            index, _ = stable_topk(scores, self.k)
            for position, candidates in zip(positions, rows[index.cpu()]):
                self.candidates[ids[position]] = candidates
                spans.append((ids[position], len(pair_rows), len(candidates)))
                pair_query.extend([position] * len(candidates))
                pair_rows.extend(candidates.tolist())
        if not pair_rows:
            return
        pair_query = torch.as_tensor(pair_query)
        pair_rows = np.asarray(pair_rows)
        values = []
        for start in range(0, len(pair_rows), self.pair_batch):
            query = pair_query[start : start + self.pair_batch].to(self.device)
            image_tokens = self.token_store.get(pair_rows[start : start + self.pair_batch])
            image_tokens = image_tokens.to(self.device, tokens.dtype)
            values.append(self.model.pair_score(image_tokens, tokens[query], mask[query]).float().cpu())
        values = torch.cat(values)
        for query_id, offset, count in spans:
            self.scores[query_id] = values[offset : offset + count]


# ----------------------------------------------------------------------------- reports


def read_conditional(path, data_dir):
    """Video ids listed in ``path`` (first tab field per line); tried as given, then under
    ``<data_dir>/annotations/`` (the original's convention)."""
    candidates = [path, os.path.join(data_dir or "", "annotations", path)]
    found = next((p for p in candidates if os.path.isfile(p)), None)
    if found is None:
        raise DataError(f"--conditional file not found: tried {candidates}")
    with open(found, encoding="utf-8") as handle:
        ids = [line.split("\t", 1)[0].strip() for line in handle if line.strip()]
    return {normalize_id(i) for i in ids if i}


def restrict(ground_truth, keep):
    return {q: gt for q, gt in ground_truth.items() if normalize_id(q) in keep}


def format_table(sections, ks=REPORT_KS):
    """Text table, one row per ranking (e.g. ``icl`` and ``pmd_rerank``)."""
    columns = [f"R@{k}" for k in ks] + ["mAP", "MedR"]
    lines = [f"{'ranking':<12}" + "".join(f"{c:>9}" for c in columns)]
    for name, metrics in sections.items():
        values = [metrics[f"r@{k}"] for k in ks] + [metrics["map"]]
        median = metrics["median_rank"]
        cells = "".join(f"{v:9.2f}" for v in values) + (f"{median:9.1f}" if median else f"{'-':>9}")
        lines.append(f"{name:<12}{cells}")
    return "\n".join(lines)


def format_breakdown(sections, key, ks=REPORT_KS):
    """Text table of ``sections[name][key]`` (``{label: metrics}``): R@1 and R@max(k) of
    each ranking per label."""
    names = [name for name in sections if key in sections[name]]
    labels = sorted({label for name in names for label in sections[name][key]})
    first, last = f"r@{ks[0]}", f"r@{ks[-1]}"
    header = f"{key[3:]:<24}{'n':>7}" + "".join(
        f"{name + ' ' + first.upper():>18}{name + ' ' + last.upper():>18}" for name in names
    )
    lines = [header]
    for label in labels:
        count = sections[names[0]][key][label]["num_queries"]
        row = f"{label[:23]:<24}{count:>7}"
        for name in names:
            metrics = sections[name][key][label]
            row += f"{metrics[first]:18.2f}{metrics[last]:18.2f}"
        lines.append(row)
    return "\n".join(lines)


def write_rankings(path, result, ground_truth, query_info, reranked=None):
    """One JSON line per ground-truth query: its ids, ground truth, ranks and top lists."""
    gt = {normalize_id(q): v for q, v in ground_truth.items()}
    missing = set(result.missing)
    with open(path, "w", encoding="utf-8") as handle:
        for row, query_id in enumerate(result.query_ids):
            line = {"video_id": query_id}
            line.update(query_info.get(query_id, {}))
            line["gt"] = gt[query_id]
            line["missing"] = query_id in missing
            line["rank"] = _rank_value(result.ranks[row])
            line["topk"] = _top_list(result, row)
            if reranked is not None:
                line["pmd_rank"] = _rank_value(reranked.ranks[row])
                line["pmd_topk"] = _top_list(reranked, row)
            handle.write(json.dumps(line) + "\n")


def _top_list(result, row):
    return [[i, round(s, 6) if math.isfinite(s) else None] for i, s in result.topk_ids(row)]


def _rank_value(rank):
    rank = float(rank)
    return int(rank) if math.isfinite(rank) else None


# ----------------------------------------------------------------------------- driver


@dataclasses.dataclass
class EvalData:
    """What a dataset contributes to an evaluation.

    ``ground_truth`` {video_id: [image ids]}: the queries that count; ``labels`` optional
    {breakdown name: {video_id: label}} (category, hard / regular); ``global_gallery`` ranks
    against all gallery images instead of the query's livestream.
    """

    query_dataset: object
    gallery_dataset: object
    ground_truth: dict
    labels: dict
    global_gallery: bool


def load_eval_data(config, dataset_name, global_gallery):
    """Query / gallery datasets, ground truth and breakdown labels from the dataset's builder."""
    builder = registry.get_builder_class(dataset_name)()
    node = config.dataset_config[dataset_name]
    labels = {"category": builder.query_categories(node)}
    if hasattr(builder, "query_difficulty"):
        labels["difficulty"] = builder.query_difficulty(node)
    return EvalData(
        query_dataset=builder.load_query(node),
        gallery_dataset=builder.load_gallery(node),
        ground_truth=builder.ground_truth(node),
        labels=labels,
        global_gallery=global_gallery,
    )


def run_evaluation(args, config, dataset_name, data, progress=True):
    """Encode, rank, re-rank (optional), write the files; returns ``(report, out_dir)``
    where ``report`` is what ``metrics.json`` holds."""
    set_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    out_dir = args.out or os.path.join("results", str(config.training.experiment_name))
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = args.checkpoint or default_checkpoint(config, args.config_file)
    model = load_eval_model(config, checkpoint, device)
    logger.info("evaluating %s on %s; outputs in %s", checkpoint, dataset_name, out_dir)

    ground_truth = data.ground_truth
    query_dataset = data.query_dataset
    data_dir = str(config.dataset_config[dataset_name].get("data_dir") or "")
    if args.conditional:
        keep = read_conditional(args.conditional, data_dir)
        ground_truth = restrict(ground_truth, keep)
        query_dataset = _restrict_dataset(query_dataset, keep)
        logger.info("--conditional %s: %d ground-truth queries kept", args.conditional, len(ground_truth))

    token_store = reranker = None
    if args.rerank_topk > 0:
        require_pair_score(model)
        token_store = TokenStore(os.path.join(out_dir, "gallery_tokens.npy"), len(data.gallery_dataset))
    try:
        gallery = encode_gallery(
            model, make_loader(data.gallery_dataset, args.batch_size, args.num_workers),
            device, token_store, progress, data.global_gallery,
        )
        if token_store is not None:
            reranker = PMDReranker(model, gallery, token_store, args.rerank_topk, device)
        queries = encode_queries(
            model, make_loader(query_dataset, args.batch_size, args.num_workers),
            device, reranker, progress, data.global_gallery,
        )
    finally:
        if token_store is not None:
            token_store.close()
    if args.conditional:
        queries = queries.subset([row for row, q in enumerate(queries.ids) if q in keep])
    torch.save(
        {
            "checkpoint": os.path.abspath(checkpoint),
            "query_ids": queries.ids, "query_groups": queries.groups, "query_emb": queries.emb,
            "gallery_ids": gallery.ids, "gallery_groups": gallery.groups, "gallery_emb": gallery.emb,
        },
        os.path.join(out_dir, EMBEDDINGS_FILE),
    )

    keep_k = max(args.topk, args.rerank_topk)
    result = rank_queries(
        queries.emb, queries.ids, gallery.emb, gallery.ids, ground_truth,
        query_groups=None if data.global_gallery else queries.groups,
        gallery_groups=None if data.global_gallery else gallery.groups,
        topk=keep_k, device=device,
    )
    if result.missing:
        logger.warning(
            "%d ground-truth queries have no prediction (counted as misses), e.g. %s",
            len(result.missing), result.missing[:5],
        )
    labels = {name: mapping for name, mapping in (data.labels or {}).items() if mapping}
    sections = {"icl": _sections(result, labels)}
    reranked = None
    if reranker is not None:
        reranked, mismatched = rerank_top(result, reranker.candidates, reranker.scores, args.rerank_topk)
        sections["pmd_rerank"] = _sections(reranked, labels)
        sections["pmd_rerank"]["rerank_topk"] = args.rerank_topk
        sections["pmd_rerank"]["num_candidate_mismatch"] = mismatched

    report = {
        "checkpoint": os.path.abspath(checkpoint),
        "config_file": os.path.abspath(args.config_file),
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
    with open(os.path.join(out_dir, METRICS_FILE), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    query_info = _query_info(queries, data, labels)
    write_rankings(os.path.join(out_dir, RANKINGS_FILE), result, ground_truth, query_info, reranked)

    if args.visualize > 0:
        from mmf.utils.visualize import visualize_queries

        visualize_queries(
            model, data, result, reranked, args.visualize,
            os.path.join(out_dir, "visualize"), device,
        )
    return report, out_dir


def _sections(result, labels):
    section = summarize(result, REPORT_KS)
    for name, mapping in labels.items():
        section[f"by_{name}"] = metrics_by_label(result, mapping)
    return section


def _query_info(queries, data, labels):
    info = {}
    for query_id, group in zip(queries.ids, queries.groups):
        if group is not None:
            info[query_id] = {"live_id": group}
    for name, mapping in labels.items():
        for query_id, label in mapping.items():
            info.setdefault(normalize_id(query_id), {})[name] = label
    return info


def format_report(report, out_dir):
    """The final console report of the evaluation scripts."""
    sections = {name: report[name] for name in ("icl", "pmd_rerank") if name in report}
    icl = report["icl"]
    lines = [
        f"queries: {icl['num_queries']} with ground truth "
        f"({icl['num_missing']} without prediction, counted as misses; "
        f"{icl['num_no_positive_in_gallery']} whose ground truth is not in their gallery; "
        f"{icl['num_extra']} encoded without ground truth, not scored)",
        f"gallery: {report['num_gallery_images']} images ({report['gallery']})",
        format_table(sections),
    ]
    for key in sorted(k for k in icl if k.startswith("by_")):
        lines.append(format_breakdown(sections, key))
    if "pmd_rerank" in report and report["pmd_rerank"]["num_candidate_mismatch"]:
        lines.append(
            f"note: {report['pmd_rerank']['num_candidate_mismatch']} queries' batch-time candidates "
            "differed from the final ICL top-k (near-equal scores)"
        )
    lines.append(f"wrote {os.path.join(out_dir, METRICS_FILE)} and {os.path.join(out_dir, RANKINGS_FILE)}")
    return "\n".join(lines)
