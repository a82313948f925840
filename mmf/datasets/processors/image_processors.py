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

``output`` says what the processor yields and where the work happens:

- ``float`` (default, the original's): a PIL image in, the transforms of
  ``torchvision.transforms`` out, e.g. a normalised float [3,H,W] tensor;
- ``uint8``: a uint8 [3,H,W] tensor in (decoded by ``torchvision.io``), the transforms of
  ``torchvision.transforms.v2`` on uint8 (same names and params), a uint8 [3,H,W] tensor out:
  ``ToTensor`` is dropped and ``Normalize`` (it must come last) is not applied here but on
  the device after the transfer (``mmf.datasets.prefetch.to_device``), with the constants
  ``normalization`` [2,3] (mean row, std row; 0 / 1 without a ``Normalize``);
- ``jpeg``: the stored bytes in, an ``EncodedImage`` out (bytes, crop, a seed for the
  random transforms drawn here); decoding (``torchvision.io.decode_jpeg`` on the device,
  batched: the GPU's decoder on CUDA) and the ``uint8`` transforms happen in
  ``mmf.datasets.prefetch.to_device``.

``decode`` is what the dataset must hand over: ``pil``, ``uint8`` or ``jpeg``.
Calling the processor on an image returns the transformed image; a dict ``{"image": img}``
returns ``{"image": transformed}`` (MMF style). ``transform_with_box(image, box)`` moves a box
through the same transforms as the image (``torchvision.transforms.v2`` with
``tv_tensors.BoundingBoxes``; ``box_mode: patch_mask``, outputs ``float`` and ``uint8``).
"""
import collections.abc
import dataclasses

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torchvision import transforms, tv_tensors
from torchvision.transforms import v2

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.processors.base import BaseProcessor

OUTPUTS = ("float", "uint8", "jpeg")
DECODE_OF_OUTPUT = {"float": "pil", "uint8": "uint8", "jpeg": "jpeg"}
SEED_RANGE = 2**62


@dataclasses.dataclass
class EncodedImage:
    """An image whose decoding waits for the device: ``data`` uint8 [n] (the stored bytes),
    ``crop`` ((x1, y1, x2, y2) or None: the rectangle to crop after decoding, ``videotoshop.
    images.crop_image``), ``seed`` of the random transforms, ``transform`` (uint8
    transforms), ``name`` (for errors)."""

    data: torch.Tensor
    crop: tuple
    seed: int
    transform: object
    name: str


@dataclasses.dataclass
class EncodedVideo:
    """The kept frames of a clip as ``EncodedImage`` s, padded to ``slots`` frames once decoded."""

    frames: list
    slots: int


@registry.register_processor("torchvision_transforms")
class TorchvisionTransforms(BaseProcessor):
    def __init__(self, config, *args, **kwargs):
        super().__init__(config)
        entries = config.get("transforms")
        if entries is None:
            raise ConfigError("torchvision_transforms: params.transforms is required")
        self.output = str(config.get("output", "float"))
        if self.output not in OUTPUTS:
            raise ConfigError(
                f"torchvision_transforms.output must be one of {OUTPUTS}, got {self.output!r}"
            )
        self.decode = DECODE_OF_OUTPUT[self.output]
        parsed = [_parse_entry(entry, position) for position, entry in enumerate(entries)]
        self._box_transform = None
        if self.output == "float":
            self.transform = transforms.Compose(
                [_build(transforms, *entry) for entry in parsed]
            )
            self.normalization = None
            self._box_transform = v2.Compose([_build_v2_float(*entry) for entry in parsed])
        else:
            self.normalization = _pop_normalize(parsed)
            steps = [_build(v2, *entry) for entry in parsed if entry[0] != "ToTensor"]
            self.transform = v2.Compose(steps or [v2.Identity()])
            if self.output == "uint8":
                self._box_transform = self.transform

    def __call__(self, item, *args, **kwargs):
        if isinstance(item, collections.abc.Mapping):
            return {"image": self._apply(item["image"])}
        return self._apply(item)

    def transform_with_box(self, image, box):
        """``image`` (what ``decode`` hands over) and ``box`` [4] (x1, y1, x2, y2 in its
        pixels) through the same transforms, random ones included -> (transformed image, float
        box [4] in pixels of the output, clamped to it)."""
        if self._box_transform is None:
            raise ConfigError(
                "torchvision_transforms: a box moves through output float or uint8, "
                f"not {self.output!r}"
            )
        boxes = tv_tensors.BoundingBoxes(
            torch.as_tensor(box, dtype=torch.float32)[None], format="XYXY",
            canvas_size=tuple(v2.functional.get_size(image)),
        )
        out, moved = self._box_transform(image, boxes)
        return out, moved.as_subclass(torch.Tensor)[0].float()

    def _apply(self, image):
        if self.output != "jpeg":
            return self.transform(image)
        seed = int(torch.randint(SEED_RANGE, ()).item())
        return EncodedImage(image.data, image.crop, seed, self.transform, image.name)


def _parse_entry(entry, position):
    """``(name, params dict, where)`` of one ``transforms`` entry."""
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
    return str(name), dict(params), where


def _pop_normalize(parsed):
    """Removes a final ``Normalize`` from ``parsed``; its (mean, std) as a [2,3] tensor."""
    positions = [i for i, (name, _, _) in enumerate(parsed) if name == "Normalize"]
    if not positions:
        return torch.tensor([[0.0] * 3, [1.0] * 3])
    name, params, where = parsed[positions[0]]
    if positions[0] != len(parsed) - 1:
        raise ConfigError(
            f"{where}: with output uint8 / jpeg, Normalize runs on the device after the "
            "transfer and must be the last transform"
        )
    parsed.pop()
    try:
        constants = torch.tensor([params["mean"], params["std"]], dtype=torch.float32)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{where}.params: mean and std of 3 channels ({err})") from None
    if constants.shape != (2, 3):
        raise ConfigError(f"{where}.params: mean and std need 3 values each")
    return constants


def _build_v2_float(name, params, where):
    """The ``torchvision.transforms.v2`` step of a ``float`` entry (``ToTensor``: ToImage then
    ToDtype float32 scaled, what v1 ``ToTensor`` does)."""
    if name == "ToTensor":
        return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    return _build(v2, name, params, where)


def _build(module, name, params, where):
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{where}: {module.__name__} has no transform {name!r}")
    if isinstance(params.get("interpolation"), str):
        mode = params["interpolation"].upper()
        if mode not in transforms.InterpolationMode.__members__:
            raise ConfigError(
                f"{where}.params.interpolation: unknown mode {params['interpolation']!r}"
            )
        params = dict(params, interpolation=transforms.InterpolationMode[mode])
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} ({name}): {err}") from None
