"""Fuzz the annotation readers: every mutated file parses into well-formed records or raises
a ``DataError`` naming the file (and the line, for the per-line pair files), never another
exception and never a hang.

Readers: LPR4M (11 columns, with and without boxes) and LPR750K pair files, query json,
gallery txt, id-list json (ground truth, livestream galleries), ``id<TAB>text`` maps,
MovingFashion pair txt, queries, gallery and ``video_to_gt.json``. Mutations (seeded, a
fixed number per reader): truncation, binary garbage, empty files, non-UTF-8 bytes, columns
replaced by values of the wrong type (numbers, huge numbers, dicts, nested lists, deep
nesting), dropped and added columns, and json values replaced, dropped or re-typed at any
depth.

Config: framework keys (``training``, ``checkpoint``, ``distributed``, ``evaluation``,
``optimizer``, ``scheduler``) set to values of the wrong kind on the command line, then a
short toy run: it trains or raises a ``ConfigError``. The config files' syntax is fuzzed in
``test_fuzz_config.py``.
"""

import copy
import json
import random
import re

import numpy as np
import pytest
from toy_helpers import toy_config

from mmf.common.errors import ConfigError, DataError
from mmf.datasets.builders.movingfashion import database as mf
from mmf.datasets.builders.videotoshop import database as lpr
from mmf.trainers.mmf_trainer import MMFTrainer

CASES = 200
LIVE = "0a1b2c3d-1111-2222-3333-444455556666"
CLIP = f"{LIVE}-1000-2000"

# Values of the wrong type or size, as they would appear in a file.
WRONG_TEXT = [
    "",
    " ",
    "5",
    "-1",
    "1e999",
    "9" * 5000,
    "NaN",
    "null",
    "true",
    "{}",
    '{"a": 1}',
    "[]",
    "[1, 2]",
    "[[1, 2, 3]]",
    '["a", 5]',
    "[null]",
    '[""]',
    '"text"',
    "[" * 5000,
    "[" * 3000 + "]" * 3000,
    '{"frames": 5}',
    "\x00",
    "é\u2028中",
    "a\tb",
    "[[0, 0, 10]]",
]
WRONG_VALUES = [
    5,
    -1,
    1e308,
    10**40,
    float("inf"),
    None,
    True,
    "",
    "text",
    {},
    {"a": 1},
    [],
    [1, 2],
    [None],
    [""],
    [[]],
    [["a"]],
    [[0, 0, 1]],
    {"frames": 5, "gt": {}},
    "x" * 10000,
]


def lpr4m_text():
    lines = []
    for clip in range(3):
        video_id = f"{LIVE}-{1000 + clip}-{2000 + clip}"
        frames = [f"{video_id}-{i:04d}" for i in range(3)]
        boxes = [[[1, 2, 30, 40]], [], [[0.5, 1, 3, 4], [5, 6, 7, 8]]]
        lines.append(
            "\t".join(
                [
                    video_id,
                    json.dumps(frames),
                    json.dumps(boxes),
                    f"img{clip}",
                    "a red bag",
                    "7",
                    "bags",
                    "look at this",
                    "small",
                    "short",
                    "single",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def lpr750k_text():
    lines = []
    for clip in range(3):
        video_id = f"{LIVE}-{1000 + clip}-{2000 + clip}"
        frames = [f"training_video_01/{video_id}/{i}.jpg" for i in range(3)]
        lines.append(
            "\t".join(
                [
                    video_id,
                    repr(frames),
                    "x",
                    f"img{clip}",
                    f"training_image/img{clip}.jpg",
                    "a red bag",
                    "7",
                    "bags",
                    "spu1",
                    "look at this",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def movingfashion_text():
    lines = []
    for clip in range(3):
        frames = [f"videos/v{clip}/{i}.jpg" for i in range(3)]
        columns = [f"v{clip}", json.dumps(frames), f"p{clip}", f"images/p{clip}.jpg", "s1"]
        lines.append("\t".join(columns))
    return "\n".join(lines) + "\n"


QUERY_JSON = {
    CLIP: {
        "frames": [f"{CLIP}/{CLIP}-000{i}.jpg" for i in range(3)],
        "gt": ["img0"],
        "category": "bags",
    },
    f"{LIVE}-3000-4000": {"frames": ["a/b.jpg"], "gt": "img1.jpg"},
}
ID_LISTS_JSON = {CLIP: ["img0", "img1.jpg"], f"{LIVE}-3000-4000": "img2"}
VIDEO_TO_GT_JSON = {
    "v0": {"gt": "p0", "source": "street", "difficulty": "hard"},
    "v1": {"gt": ["p1", "p2"], "type": ["regular", "regular"]},
    "v2": "p3",
}
GALLERY_TXT = f"{LIVE}/img0.jpg\n{LIVE}/img1.jpg\n{LIVE}/img1.jpg\nother-live/img2.png\n"
TEXT_MAP_TXT = f"{CLIP}\tlook at this\nimg0.jpg\ta red bag\n"


# ------------------------------------------------------------------- checks of a good parse
def is_text(value):
    return isinstance(value, str) and bool(value.strip())


def check_pairs(records, boxes=False):
    for index in range(len(records)):
        record = records[index]
        assert is_text(record.video_id) and is_text(record.image_id) and is_text(record.image_path)
        assert isinstance(record.live_id, str)
        assert record.frames and all(is_text(frame) for frame in record.frames)
        if boxes:
            assert len(record.boxes) == len(record.frames)
            for frame_boxes in record.boxes:
                # float [n, 5] rows: x1, y1, x2, y2 and a score (1 for annotated boxes)
                assert frame_boxes.ndim == 2 and frame_boxes.shape[1] == 5
                assert np.isfinite(frame_boxes).all()


def check_queries(records):
    for record in records:
        assert is_text(record.video_id)
        assert record.frames and all(isinstance(f, str) for f in record.frames)
        assert all(isinstance(g, str) for g in record.gt)
        assert record.category is None or isinstance(record.category, str)


def check_gallery(records):
    for record in records:
        assert is_text(record.image_id) and is_text(record.live_id) and is_text(record.path)


def check_id_lists(mapping):
    assert isinstance(mapping, dict)
    for key, ids in mapping.items():
        assert isinstance(key, str) and all(isinstance(i, str) for i in ids)


def check_text_map(mapping):
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def check_video_to_gt(result):
    ground_truth, difficulty = result
    check_id_lists(ground_truth)
    assert all(ids for ids in ground_truth.values())
    assert set(difficulty.values()) <= {"regular", "hard"}


# Each reader: (base file content, how to read a path and check the result, per-line file).
READERS = {
    "lpr4m_pairs": (lpr4m_text(), lambda p: check_pairs(lpr.LPRPairAnnotations(p)), True),
    "lpr4m_pairs_boxes": (
        lpr4m_text(),
        lambda p: check_pairs(lpr.LPRPairAnnotations(p, read_boxes=True), boxes=True),
        True,
    ),
    "lpr750k_pairs": (lpr750k_text(), lambda p: check_pairs(lpr.LPRPairAnnotations(p)), True),
    "lpr_query_json": (QUERY_JSON, lambda p: check_queries(lpr.read_query_json(p)), False),
    "lpr_gallery_txt": (GALLERY_TXT, lambda p: check_gallery(lpr.read_gallery_txt(p)), False),
    "lpr_gt_json": (ID_LISTS_JSON, lambda p: check_id_lists(lpr.read_id_lists_json(p)), False),
    "lpr_text_map": (TEXT_MAP_TXT, lambda p: check_text_map(lpr.read_text_map(p)), False),
    "movingfashion_pairs": (
        movingfashion_text(),
        lambda p: check_pairs(mf.MovingFashionPairAnnotations(p)),
        True,
    ),
    "movingfashion_queries": (QUERY_JSON, lambda p: check_queries(mf.read_queries(p)), False),
    "movingfashion_gallery": (GALLERY_TXT, lambda p: check_gallery(mf.read_gallery(p)), False),
    "movingfashion_video_to_gt": (
        VIDEO_TO_GT_JSON,
        lambda p: check_video_to_gt(mf.read_video_to_gt(p)),
        False,
    ),
}


# ---------------------------------------------------------------------------- mutations
def mutate_bytes(data, rng):
    kind = rng.randrange(5)
    if kind == 0:
        return data[: rng.randrange(len(data) + 1)]
    if kind == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    if kind == 2:
        return rng.choice([b"", b"\n", b"  \n\n", b"\t", b"\xef\xbb\xbf"])
    if kind == 3:
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.choice([b"\xff", b"\xc3", b"\x80\x80", b"\xed\xa0\x80"]) + data[at:]
    at = rng.randrange(len(data) + 1)
    inserted = rng.choice([b"\x00", b"\r", b"\t", b'"', b"]", b"{", b"\n\n", b"[" * 5000])
    return data[:at] + inserted + data[at:]


def mutate_columns(text, rng):
    """Replace, drop or duplicate a column of one line (tab-separated files)."""
    lines = text.splitlines()
    row = rng.randrange(len(lines))
    columns = lines[row].split("\t")
    column = rng.randrange(len(columns))
    kind = rng.randrange(4)
    if kind == 0:
        del columns[column]
    elif kind == 1:
        columns.insert(column, rng.choice(WRONG_TEXT))
    else:
        columns[column] = rng.choice(WRONG_TEXT)
    lines[row] = "\t".join(columns)
    return "\n".join(lines) + "\n"


def mutate_lines(text, rng):
    """Replace a line by a wrong value (one-value-per-line files)."""
    lines = text.splitlines()
    lines[rng.randrange(len(lines))] = rng.choice(WRONG_TEXT + ["\t", "a\t", "\tb", "/", "x/"])
    return "\n".join(lines) + "\n"


def mutate_json(value, rng):
    """Replace, drop or re-type one node anywhere in a json document."""
    value = copy.deepcopy(value)
    if rng.random() < 0.1:
        return rng.choice(WRONG_VALUES + [[value], list(value.values())])
    parent = value
    while True:
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        if not keys:
            return value
        key = rng.choice(keys)
        child = parent[key]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            parent = child
            continue
        if isinstance(parent, dict) and rng.random() < 0.25:
            del parent[key]
        elif isinstance(parent, dict) and rng.random() < 0.2:
            parent[rng.choice(["", "frames", "gt", "x" * 500])] = rng.choice(WRONG_VALUES)
        else:
            parent[key] = rng.choice(WRONG_VALUES)
        return value


def mutated_files(base, per_line, rng):
    """``CASES`` mutated versions (bytes) of ``base`` (text or a json value)."""
    is_json = not isinstance(base, str)
    text = json.dumps(base) if is_json else base
    for _ in range(CASES):
        choice = rng.random()
        if choice < 0.4:
            yield mutate_bytes(text.encode("utf-8"), rng)
        elif is_json:
            yield json.dumps(mutate_json(base, rng)).encode("utf-8")
        elif per_line:
            yield mutate_columns(text, rng).encode("utf-8")
        else:
            yield mutate_lines(text, rng).encode("utf-8")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(READERS))
def test_reader_parses_or_raises_data_error(tmp_path, name):
    base, read_and_check, per_line = READERS[name]
    suffix = ".json" if not isinstance(base, str) else ".txt"
    rng = random.Random(f"reliability-fuzz-{name}")
    # The unmutated file parses.
    path = tmp_path / f"base{suffix}"
    path.write_text(json.dumps(base) if suffix == ".json" else base, encoding="utf-8")
    read_and_check(str(path))
    outcomes = {"parsed": 0, "error": 0}
    for case, data in enumerate(mutated_files(base, per_line, rng)):
        path = tmp_path / f"case{case}{suffix}"
        path.write_bytes(data)
        try:
            read_and_check(str(path))
        except DataError as err:
            message = str(err)
            assert str(path) in message, (data[:300], message)
            if suffix == ".txt" and "file is empty" not in message:
                assert re.search(re.escape(str(path)) + r":\d+: ", message), (data[:300], message)
            outcomes["error"] += 1
        except Exception as err:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"{name} case {case}: {type(err).__name__}: {err}\ninput: {data[:300]!r}")
        else:
            outcomes["parsed"] += 1
    # The mutations hit both outcomes: neither everything accepted nor everything refused.
    assert outcomes["parsed"] > 0 and outcomes["error"] > 0, outcomes


def test_errors_name_the_line(tmp_path):
    first_frames = [f"{CLIP}-{i:04d}" for i in range(3)]
    first_line = lpr4m_text().splitlines()[0]
    cases = {
        "frames_dict.txt": lpr4m_text().replace(json.dumps(first_frames), '{"a": 1}'),
        "deep.txt": first_line + "\n" + "\t".join(["v", "[" * 5000] + ["x"] * 9) + "\n",
        "short.txt": lpr4m_text() + "only\tthree\tcolumns\n",
        "bad_utf8.txt": lpr4m_text().encode("utf-8") + b"\xff\t[]\n",
    }
    expected_line = {"frames_dict.txt": 1, "deep.txt": 2, "short.txt": 4, "bad_utf8.txt": 4}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        with pytest.raises(DataError) as err:
            check_pairs(lpr.LPRPairAnnotations(str(path)))
        assert f"{path}:{expected_line[name]}:" in str(err.value), str(err.value)


CONFIG_KEYS = [
    "training.batch_size",
    "training.max_updates",
    "training.max_epochs",
    "training.log_interval",
    "training.checkpoint_interval",
    "training.evaluation_interval",
    "training.update_frequency",
    "training.seed",
    "training.shuffle",
    "training.drop_last",
    "training.clip_gradients",
    "training.max_grad_l2_norm",
    "training.early_stop",
    "training.early_stop.patience",
    "training.early_stop.criteria",
    "training.early_stop.enabled",
    "training.early_stop.minimize",
    "training.fp16",
    "training.bf16",
    "training.device",
    "training.callbacks",
    "training.exit_on_nan_losses",
    "training.lr_scheduler",
    "training.experiment_name",
    "training.logger_level",
    "training.progress_bar",
    "training.tensorboard",
    "training.trainer",
    "training.batch_size_per_device",
    "checkpoint.resume",
    "checkpoint.resume_file",
    "checkpoint.max_to_keep",
    "checkpoint.reset",
    "checkpoint.reset.optimizer",
    "checkpoint.pretrained_state_mapping",
    "optimizer",
    "optimizer.type",
    "optimizer.params",
    "optimizer.params.lr",
    "optimizer.params.betas",
    "optimizer.params.weight_decay",
    "scheduler",
    "scheduler.type",
    "scheduler.params",
    "scheduler.params.num_warmup_steps",
    "scheduler.params.num_training_steps",
    "evaluation.metrics",
    "run_type",
    "distributed.timeout",
]
CONFIG_VALUES = [
    "abc",
    "-1",
    "0",
    "1e999",
    "-1e999",
    "1.5",
    "[1, 2]",
    "[]",
    "{'a': 1}",
    "{}",
    "None",
    "True",
    "''",
    "[{'type': 5}]",
    "{'type': 'x', 'params': 3}",
    str(10**30),
]
# A huge training length or accumulation is a valid, endless run, not a malformed value.
ENDLESS = ("training.max_updates", "training.max_epochs", "training.update_frequency")


@pytest.mark.timeout(120)
def test_framework_keys_of_the_wrong_kind_train_or_raise_config_error(tmp_path):
    rng = random.Random("reliability-fuzz-config")
    outcomes = {"trained": 0, "error": 0}
    for case in range(60):
        key, value = rng.choice(CONFIG_KEYS), rng.choice(CONFIG_VALUES)
        if key in ENDLESS and value == str(10**30):
            value = "-1"
        option = f"{key}={value}"
        try:
            config = toy_config(
                tmp_path / str(case),
                "run_type=train_val",
                "training.max_updates=2",
                "training.evaluation_interval=1",
                "training.progress_bar=false",
                option,
            )
            MMFTrainer(config).load().train()
        except ConfigError as err:
            assert str(err), option
            outcomes["error"] += 1
        except Exception as err:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"{option}: {type(err).__name__}: {err}")
        else:
            outcomes["trained"] += 1
    assert outcomes["trained"] > 0 and outcomes["error"] > 0, outcomes
