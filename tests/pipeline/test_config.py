"""The strict config loader: defaults < YAML < --set, unknown keys and wrong types refused."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from pipeline.config import ConfigError, dump_yaml, from_dict, load_config, to_dict


@dataclass(frozen=True)
class Optim:
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Run:
    epochs: int = 10
    name: str = "x"
    faithful: bool = False
    mode: Literal["tcl", "cl"] = "tcl"
    init: str | None = None
    sigmas: tuple[float, ...] = (0.0, 0.01)
    optim: Optim = field(default_factory=Optim)


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_yaml_and_overrides(tmp_path):
    assert load_config(Run) == Run()
    path = _yaml(tmp_path, "epochs: 3\noptim:\n  lr_head: 0.01\nsigmas: [0, 0.5, 1]\n")
    cfg = load_config(Run, path, ["optim.lr_backbone=2e-4", "mode=cl", "epochs=5"])
    assert cfg.epochs == 5 and cfg.mode == "cl"
    assert cfg.optim == Optim(lr_backbone=2e-4, lr_head=0.01)
    assert cfg.sigmas == (0.0, 0.5, 1.0) and isinstance(cfg.sigmas[0], float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 1  # frozen
    assert from_dict(Run, to_dict(cfg)) == cfg
    assert "lr_head: 0.01" in dump_yaml(to_dict(cfg))


@pytest.mark.parametrize(
    "text,overrides,match",
    [
        ("epoch: 3\n", [], r"unknown config key 'epoch'; did you mean 'epochs'"),
        ("optim:\n  lr_heads: 1\n", [], r"'optim.lr_heads'; did you mean 'lr_head'"),
        ("", ["optim.lr_bakbone=1"], r"did you mean 'lr_backbone'"),
        ("epochs: three\n", [], r"epochs: expected an int, got 'three'"),
        ("epochs: 2.5\n", [], r"epochs: expected an int"),
        ("faithful: 1\n", [], r"faithful: expected true/false"),
        ("mode: simclr\n", [], r"mode: expected one of \['tcl', 'cl'\]"),
        ("optim: 3\n", [], r"optim: expected a mapping"),
        ("optim:\n  betas: [0.9]\n", [], r"betas: expected 2 items"),
        ("- a\n- b\n", [], r"expected a mapping at the top level"),
        ("epochs: [\n", [], r"invalid YAML"),
        ("", ["epochs"], r"--set expects key=value"),
        ("", ["epochs.x=1"], r"epochs"),
    ],
)
def test_errors(tmp_path, text, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Run, _yaml(tmp_path, text), overrides)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="missing"):
        load_config(Run, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="directory"):
        load_config(Run, tmp_path)


def test_optional(tmp_path):
    assert load_config(Run, None, ["init=a.pt"]).init == "a.pt"
    assert load_config(Run, None, ["init=null"]).init is None
