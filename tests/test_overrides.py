"""defaults -> YAML -> key=value overrides into nested frozen dataclasses; errors name the key and the valid ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from clipforge.overrides import ConfigError, load_config, parse_override, to_dict


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    clip: float | None = 1.0
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    steps: int = 10
    name: str = "x"
    flag: bool = False
    templates: tuple[str, ...] = ("t",)


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 1e-3\n  kind: b\nsteps: 20\n")
    config = load_config(Outer, path, ["steps=30", "inner.betas=[0.5, 0.6]", "inner.clip=null", "flag=true"])
    assert config == Outer(inner=Inner(lr=0.001, betas=(0.5, 0.6), clip=None, kind="b"), steps=30, flag=True)
    assert load_config(Outer, None, ["templates=[a, b, c]"]).templates == ("a", "b", "c")
    assert to_dict(config)["inner"]["lr"] == 0.001


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(Outer, None, ["inner.lrr=1"])
    message = str(error.value)
    assert "'inner.lrr'" in message and "lr, betas, clip, kind" in message and "override" in message
    path = tmp_path / "bad.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: unknown key 'stepz'; valid keys at top level: inner, steps"
    ):
        load_config(Outer, path)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("steps=ten", r"bad value 'ten' for 'steps': expected an integer"),
        ("steps=1.5", r"for 'steps': expected an integer"),
        ("flag=maybe", r"for 'flag': expected true or false"),
        ("inner.kind=c", r"for 'inner.kind': must be one of 'a', 'b'"),
        ("inner.betas=[1]", r"for 'inner.betas': expected 2 items, got 1"),
        ("inner.lr=fast", r"for 'inner.lr': expected a number"),
        ("steps", r"expected key.sub=value"),
    ],
)
def test_bad_values_are_named(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(Outer, None, [override])


def test_parse_override_reads_yaml_scalars():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=hello world") == ("a", "hello world")
    assert parse_override("a=") == ("a", "")


def test_train_config_rejects_bad_combination():
    from clipforge.train import TrainConfig

    with pytest.raises(
        ConfigError, match=r"data.batch_size \(10\) must be divisible by data.accum_steps \(4\)"
    ):
        load_config(TrainConfig, None, ["data.batch_size=10", "data.accum_steps=4"]).validate()
    with pytest.raises(ConfigError, match="'precision': must be one of"):
        load_config(TrainConfig, None, ["precision=fp64"])
