"""``MMFDataset``: a dataset reading annotation file ``annotations.<split>[index]``.

``annotation_files`` gives the entries of ``annotations.<split>``; the value ``auto`` stands
for the first entry of ``known_annotations.<split>`` whose files exist under ``data_dir``.
"""
import glob
import logging
import os

from mmf.common.errors import ConfigError, DataError
from mmf.datasets.base_dataset import BaseDataset

logger = logging.getLogger(__name__)

AUTO = "auto"


class MMFDataset(BaseDataset):
    """Resolves the annotation and image paths of entry ``index`` against ``config.data_dir``.

    Attributes: ``annotation_path`` (absolute path of the annotation file) and
    ``image_dir`` (``data_dir/images.<split>[index]``, or ``data_dir`` when unset).
    """

    def __init__(self, dataset_name, config, dataset_type="train", index=0, *args, **kwargs):
        super().__init__(dataset_name, config, dataset_type)
        self.index = index
        self.data_dir = str(config.get("data_dir") or "")
        annotations = annotation_files(config, dataset_type, dataset_name)
        images = _as_list((config.get("images") or {}).get(dataset_type))
        if index >= len(annotations):
            raise IndexError(
                f"dataset_config.{dataset_name}.annotations.{dataset_type} has "
                f"{len(annotations)} entries; index {index} requested"
            )
        self.annotation_path = os.path.join(self.data_dir, annotations[index])
        image_rel = images[index] if index < len(images) else ""
        self.image_dir = os.path.join(self.data_dir, image_rel or "")


def annotation_files(config, dataset_type, dataset_name, log=False):
    """The entries of ``annotations.<dataset_type>``, paths relative to ``config.data_dir``.

    For ``auto``: the files of the first entry of ``known_annotations.<dataset_type>`` that
    matches a file (an entry may be a glob pattern: all its matches, sorted; ``log`` logs the
    choice). When none matches, the train split raises ``DataError`` listing the files that
    look like the known ones; another split has no file ([]).
    """
    value = (config.get("annotations") or {}).get(dataset_type)
    if not isinstance(value, str) or value != AUTO:
        return _as_list(value)
    key = f"dataset_config.{dataset_name}.annotations.{dataset_type}"
    known = _as_list((config.get("known_annotations") or {}).get(dataset_type))
    if not known:
        raise ConfigError(
            f"{key} is {AUTO!r} but dataset_config.{dataset_name}.known_annotations."
            f"{dataset_type} lists no file"
        )
    data_dir = str(config.get("data_dir") or "")
    for pattern in known:
        files = _files(data_dir, pattern)
        if files:
            if log:
                logger.info("%s: %s -> %s (the first of %s found in %s)",
                            key, AUTO, files, known, data_dir)
            return files
    if dataset_type != "train":
        if log:
            logger.info("%s: %s -> no file (none of %s in %s)", key, AUTO, known, data_dir)
        return []
    similar = os.path.commonprefix(known).rstrip("_-.") + "*"
    raise DataError(
        f"{key} is {AUTO!r} and none of {known} exists in {data_dir}; {similar} there: "
        f"{_files(data_dir, similar) or 'none'}; set {key} to the file(s) to read"
    )


def _files(data_dir, pattern):
    """Files under ``data_dir`` matching glob ``pattern``, relative, sorted."""
    matches = glob.glob(pattern, root_dir=data_dir or None)
    return sorted(m for m in matches if os.path.isfile(os.path.join(data_dir, m)))


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)
