"""Hard-negative mining for PMD and the same-product mask, vectorised (no host synchronisation)."""
import torch
import torch.nn.functional as F

from mmf.utils.distributed import all_gather_object, get_rank


def mine_hard_negatives(similarity, positive, num_negatives, exclude=None):
    """Top-``num_negatives`` columns of each row, skipping the positive (and ``exclude``d) columns.

    Args:
        similarity: [B, G] image-to-video similarity of the local images against the global batch.
        positive: [B] long, the column of each row's paired video.
        num_negatives: K; clipped to G - 1.
        exclude: optional [B, G] bool, columns that must not be negatives (same product).

    Returns:
        ``(indices [B, K] long, valid [B, K] bool)``; ``valid`` is False where a row has fewer
        than K allowed columns (the slot then holds an excluded column and must be ignored).
    """
    num_columns = similarity.size(1)
    k = min(num_negatives, num_columns - 1)
    blocked = F.one_hot(positive, num_columns).bool()
    if exclude is not None:
        blocked = blocked | exclude
    values, indices = similarity.masked_fill(blocked, float("-inf")).topk(k, dim=1)
    return indices, torch.isfinite(values)


def same_product_mask(image_ids, batch_size, device):
    """[B, G] bool: local row i and global column j show the same product image (image ids equal).

    ``image_ids`` are this rank's ids; they are gathered from all ranks in rank order.
    """
    all_ids = [image_id for ids in all_gather_object(list(image_ids)) for image_id in ids]
    codes = {image_id: code for code, image_id in enumerate(dict.fromkeys(all_ids))}
    all_codes = torch.tensor([codes[i] for i in all_ids], device=device)
    start = get_rank() * batch_size
    local = all_codes[start : start + batch_size]
    return local[:, None] == all_codes[None, :]
