"""Collation: ``SampleList`` from ``Sample``s and ``BatchCollator`` (skipped items, shared memory
in DataLoader workers)."""
import pytest
import torch

from mmf.common.batch_collator import BatchCollator
from mmf.common.sample import Sample, SampleList


def _sample(index, **extra):
    return Sample(
        video=torch.full((2, 3), float(index)),
        label=torch.tensor(index),
        video_id=f"clip-{index}",
        meta={"frames": torch.arange(4) + index, "source": "lpr"},
        **extra,
    )


def test_sample_list_stacks_tensors_lists_other_fields_and_nests_dicts():
    batch = SampleList([_sample(0), _sample(1), _sample(2)])
    assert list(batch.keys()) == ["video", "label", "video_id", "meta"]
    assert batch.video.shape == (3, 2, 3) and batch.video[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert batch.label.tolist() == [0, 1, 2]
    assert batch.video_id == ["clip-0", "clip-1", "clip-2"]
    assert isinstance(batch.meta, SampleList) and batch.meta.frames.shape == (3, 4)
    assert batch.meta.source == ["lpr"] * 3
    assert batch.get_batch_size() == 3
    moved = batch.to("cpu")
    assert torch.equal(moved.meta.frames, batch.meta.frames) and moved.video_id == batch.video_id


def test_sample_list_errors_name_the_field():
    odd = _sample(1)
    odd.video = torch.zeros(3, 3)
    shapes = r"samples have shapes \[\(2, 3\), \(3, 3\)\]"
    with pytest.raises(ValueError, match=f"cannot stack field 'video': {shapes}"):
        SampleList([_sample(0), odd])
    with pytest.raises(ValueError, match="sample 1 of the batch has no field 'extra'"):
        SampleList([_sample(0, extra=1), _sample(1)])
    with pytest.raises(ValueError, match="empty list"):
        SampleList([])
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _sample(0).missing  # noqa: B018


def test_batch_collator_drops_skipped_items_and_counts_them():
    collate = BatchCollator("videotoshop", "train")
    batch = collate([_sample(0), None, _sample(2), None])
    assert batch.video_id == ["clip-0", "clip-2"] and batch.skipped_samples == 2
    assert (batch.dataset_name, batch.dataset_type) == ("videotoshop", "train")
    empty = collate([None, None])
    assert empty.skipped_samples == 2 and "video" not in empty


class _Items(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return _sample(index)


def _collate_and_record_sharing(samples):
    batch = BatchCollator("videotoshop", "train")(samples)
    batch.video_shared_in_worker = batch.video.is_shared()
    return batch


def test_worker_batches_are_stacked_into_shared_memory():
    loader = torch.utils.data.DataLoader(
        _Items(), batch_size=2, num_workers=1, collate_fn=_collate_and_record_sharing
    )
    batches = list(loader)
    assert [b.video_shared_in_worker for b in batches] == [True, True]
    assert torch.cat([b.label for b in batches]).tolist() == [0, 1, 2, 3]
    in_process = _collate_and_record_sharing([_sample(0), _sample(1)])
    assert in_process.video_shared_in_worker is False
