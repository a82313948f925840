"""What an evaluation reads: the run's config, its model and checkpoint, and the test data.

- ``load_eval_config``: the run's saved ``config.yaml`` on top of the current framework
  layers (``component_layers``: defaults, model, dataset), with the encoders' pretrained
  file names set to null, since the checkpoint holds every weight, and ``data_dir``
  replacing a path baked into the config. Processors follow the training policy
  (``drop_foreign_processors``).
- ``load_eval_model``: builds the model and loads the checkpoint strictly (ours, or the
  authors' files whose keys carry ``module.`` prefixes).
- ``load_eval_data``: query and gallery datasets, ground truth and breakdown labels from
  the dataset's builder; ``load_val_data``: the same for the validation split (choosing a
  re-ranking weight); ``read_conditional`` / ``restrict`` keep a listed subset of queries.
"""
import dataclasses
import os

import torch
from omegaconf import OmegaConf

from mmf.common.errors import CheckpointError, ConfigError, DataError
from mmf.common.registry import registry
from mmf.datasets.builders.videotoshop.database import annotation_kind
from mmf.datasets.ids import normalize_id
from mmf.datasets.mmf_dataset import annotation_files
from mmf.utils.build import build_model
from mmf.utils.checkpoint import load_state_dict_file, strip_module_prefix
from mmf.utils.config_checks import check_known_keys
from mmf.utils.configuration import (
    component_layers,
    drop_foreign_processors,
    load_config,
    register_resolvers,
)
from mmf.utils.env import setup_imports

_PRETRAINED_KEYS = (
    "image_encoder.params.pretrained_model_name",
    "transformer_model.pretrained_model_name",
)


def load_eval_config(config_file, dataset_name, data_dir=None):
    """The saved run config merged over the current defaults, ready for evaluation.

    Returns ``(config, dataset_name)``, resolved. ``dataset_name`` falls back to the run's
    only dataset.
    """
    register_resolvers()
    setup_imports()
    saved = load_config(config_file)
    model_name = saved.get("model")
    if not model_name or model_name not in (saved.get("model_config") or {}):
        raise ConfigError(f"{config_file}: needs 'model' and model_config.<model>")
    dataset_name = _dataset_name(saved, dataset_name, config_file)
    layers = component_layers(model_name, [dataset_name])
    check_known_keys(
        OmegaConf.to_container(saved), OmegaConf.to_container(layers[0]), strict=False,
        source=config_file,
    )
    config = OmegaConf.merge(*layers, saved)

    model_node = config.model_config[model_name]
    for key in _PRETRAINED_KEYS:
        if OmegaConf.select(model_node, key, default=None) is not None:
            OmegaConf.update(model_node, key, None)
    if data_dir is not None:
        config.dataset_config[dataset_name].data_dir = os.path.abspath(os.path.expanduser(data_dir))
    drop_foreign_processors(config)
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
    raise ConfigError(
        f"{config_file}: cannot tell which dataset to evaluate among {names or available}"
    )


def default_checkpoint(config, config_file):
    """``<model>_final.pth`` next to ``config_file`` (the run folder), else in the saved
    ``env.save_dir``. The config's own folder comes first: a relative ``env.save_dir`` would
    be read against the current folder, where a different run of the same name may live."""
    name = f"{config.model}_final.pth"
    candidates = [os.path.join(os.path.dirname(os.path.abspath(config_file)), name)]
    save_dir = OmegaConf.select(config, "env.save_dir", default=None)
    if save_dir:
        candidates.append(os.path.abspath(os.path.join(os.path.expanduser(str(save_dir)), name)))
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


@dataclasses.dataclass
class EvalData:
    """What a dataset contributes to an evaluation.

    ``ground_truth`` {video_id: [image ids]}: the queries that count; ``labels`` optional
    {breakdown name: {video_id: label}} (category, hard / regular, scale ...); ``global_gallery``
    ranks against all gallery images instead of the query's livestream; ``boxes`` where the
    query frames' boxes came from and how many frames fell back to the full frame
    (``attach_query_boxes``; None for a dataset without boxes); ``breakdown_sources``
    {breakdown name: how its labels were obtained} where that is not the annotation's plain
    field.
    """

    query_dataset: object
    gallery_dataset: object
    ground_truth: dict
    labels: dict
    global_gallery: bool
    boxes: dict = None
    breakdown_sources: dict = None


def load_eval_data(config, dataset_name, global_gallery, boxes="auto"):
    """Query / gallery datasets, ground truth and breakdown labels from the dataset's builder.

    ``boxes``: the query frames' box source (``lpr_eval.py --boxes``): ``none``, ``gt``, a box
    json path, or ``auto`` (``gt`` for a model with a ``box_mode``, else ``none``); only a
    builder with ``attach_query_boxes`` (videotoshop) takes one other than none / auto.
    """
    builder = registry.get_builder_class(dataset_name)()
    node = config.dataset_config[dataset_name]
    labels = {"category": builder.query_categories(node)}
    if hasattr(builder, "query_difficulty"):
        labels["difficulty"] = builder.query_difficulty(node)
    query_dataset = builder.load_query(node)
    box_report, sources = None, {}
    if hasattr(builder, "attach_query_boxes"):
        box_report = builder.attach_query_boxes(node, query_dataset, boxes)
        breakdowns, sources = builder.query_breakdowns(node, query_dataset)
        labels.update(breakdowns)
    elif boxes not in ("auto", "none"):
        raise ConfigError(f"--boxes {boxes}: dataset {dataset_name} has no boxes")
    return EvalData(
        query_dataset=query_dataset,
        gallery_dataset=builder.load_gallery(node),
        ground_truth=builder.ground_truth(node),
        labels=labels,
        global_gallery=global_gallery,
        boxes=box_report,
        breakdown_sources=sources,
    )


def load_val_data(config, dataset_name, global_gallery, boxes="auto"):
    """The validation split as ``EvalData`` (``labels`` empty), to choose a re-ranking
    weight on: ``annotations.val`` listing a query json and a gallery list (ground truth from
    the json's ``gt``; texts and boxes from the ``val_*`` side files), or pair files (queries:
    each clip once; gallery: each image once per livestream, or once with ``global_gallery``;
    ground truth: the images paired with a clip, as the in-training validation).
    ``boxes``: the test split's box source; the val queries take their ground-truth boxes
    (``val_box_file``) unless it is ``none``. ``ConfigError`` when the dataset has no val
    split."""
    node = config.dataset_config[dataset_name]
    entries = annotation_files(node, "val", dataset_name)
    if not entries:
        raise ConfigError(
            f"--rerank_weight auto chooses the weight on the validation split, but "
            f"dataset_config.{dataset_name}.annotations.val lists no file"
        )
    builder = registry.get_builder_class(dataset_name)()
    data_dir = str(node.get("data_dir") or "")
    kinds = [annotation_kind(os.path.join(data_dir, str(entry))) for entry in entries]
    if "query" in kinds:
        query_dataset = builder.load_query(node, "val")
        if hasattr(builder, "attach_query_boxes") and query_dataset.box_settings.mode:
            builder.attach_query_boxes(node, query_dataset, "none" if boxes == "none" else "gt")
        gallery_dataset = builder.load_gallery(node, "val")
        ground_truth = {r.video_id: r.gt for r in query_dataset.records if r.gt}
    else:
        pairs = builder.load(node, "val")
        pairs.init_processors()
        query_dataset, gallery_dataset, ground_truth = _pair_views(pairs, global_gallery)
    if not ground_truth:
        raise DataError(
            f"dataset_config.{dataset_name}.annotations.val {entries}: no query with ground truth"
        )
    return EvalData(query_dataset, gallery_dataset, ground_truth, {}, global_gallery)


def _pair_views(pairs, global_gallery):
    """Query and gallery views (``Subset``) of a pair dataset, and its ground truth."""
    query_rows, gallery_rows, ground_truth = {}, {}, {}
    offset = 0
    for part in getattr(pairs, "datasets", None) or [pairs]:
        for index in range(len(part)):
            record = part.records[index]
            video_id, image_id = normalize_id(record.video_id), normalize_id(record.image_id)
            targets = ground_truth.setdefault(video_id, [])
            if image_id not in targets:
                targets.append(image_id)
            query_rows.setdefault(video_id, offset + index)
            group = None if global_gallery else record.live_id
            gallery_rows.setdefault((group, image_id), offset + index)
        offset += len(part)
    subset = torch.utils.data.Subset
    return (
        subset(pairs, list(query_rows.values())),
        subset(pairs, list(gallery_rows.values())),
        ground_truth,
    )


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


def restrict(data, keep):
    """``data`` with only the ground-truth queries and query clips whose id is in ``keep``
    (the query dataset is kept whole when it lists no records)."""
    ground_truth = {q: gt for q, gt in data.ground_truth.items() if normalize_id(q) in keep}
    query_dataset = data.query_dataset
    records = getattr(query_dataset, "records", None)
    if records is not None:
        rows = [row for row, record in enumerate(records) if normalize_id(record.video_id) in keep]
        query_dataset = torch.utils.data.Subset(query_dataset, rows)
    return dataclasses.replace(data, ground_truth=ground_truth, query_dataset=query_dataset)
