"""``torchvision_transforms``: a ``torchvision.transforms.Compose`` built from config.

Params: ``transforms``, a list whose entries are either a transform name (``ToTensor``) or
``{type: <name>, params: {...}}`` with the keyword arguments of that torchvision transform::

    transforms:
      - type: Resize
        params: {size: [256, 256]}
      - type: RandomCrop
        params: {size: [224, 224]}
      - RandomHorizontalFlip
      - ToTensor
      - type: Normalize
        params: {mean: [0.481, 0.458, 0.408], std: [0.269, 0.261, 0.276]}

An ``interpolation`` given as a string (``bicubic``) becomes ``InterpolationMode.BICUBIC``.
Calling the processor on a PIL image returns the transformed image ([3,H,W] tensor after
``ToTensor``); a dict ``{"image": img}`` returns ``{"image": transformed}`` (MMF style).
"""
import collections.abc

from omegaconf import DictConfig, ListConfig, OmegaConf
from torchvision import transforms

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.processors.base import BaseProcessor


@registry.register_processor("torchvision_transforms")
class TorchvisionTransforms(BaseProcessor):
    def __init__(self, config, *args, **kwargs):
        super().__init__(config)
        entries = config.get("transforms")
        if entries is None:
            raise ConfigError("torchvision_transforms: params.transforms is required")
        self.transform = transforms.Compose(
            [_build_transform(entry, position) for position, entry in enumerate(entries)]
        )

    def __call__(self, item, *args, **kwargs):
        if isinstance(item, collections.abc.Mapping):
            return {"image": self.transform(item["image"])}
        return self.transform(item)


def _build_transform(entry, position):
    where = f"torchvision_transforms.transforms[{position}]"
    if isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, (DictConfig, collections.abc.Mapping)) and entry.get("type"):
        name = entry["type"]
        params = entry.get("params") or {}
    else:
        raise ConfigError(f"{where}: expected a transform name or {{type, params}}, got {entry!r}")
    if isinstance(params, (DictConfig, ListConfig)):
        params = OmegaConf.to_container(params, resolve=True)
    cls = getattr(transforms, name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{where}: torchvision.transforms has no transform {name!r}")
    params = dict(params)
    if isinstance(params.get("interpolation"), str):
        mode = params["interpolation"].upper()
        if mode not in transforms.InterpolationMode.__members__:
            raise ConfigError(f"{where}.params.interpolation: unknown mode {params['interpolation']!r}")
        params["interpolation"] = transforms.InterpolationMode[mode]
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} ({name}): {err}") from None
