"""Optimizer parameter groups keyed by (lr, weight decay)."""


def grouped_parameters(named_params, weight_decay):
    """``[(name, param, lr)]`` -> one group per distinct (lr, weight decay).

    Weight decay is 0 for names containing ``"bias"`` and ``weight_decay`` otherwise (the
    original's rule; LayerNorm weights and embeddings are decayed). Frozen parameters are
    dropped. Each group is ``{"params", "names", "lr", "weight_decay"}``, in first-seen order.
    """
    groups = {}
    for name, param, lr in named_params:
        if not param.requires_grad:
            continue
        decay = 0.0 if "bias" in name else weight_decay
        group = groups.setdefault(
            (lr, decay), {"params": [], "names": [], "lr": lr, "weight_decay": decay}
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())
