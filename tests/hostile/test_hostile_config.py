"""Every config field has a validated range; NaN and inf are refused before anything runs (issue 11, item 7)."""

from __future__ import annotations

import math
from typing import get_type_hints

import pytest

from pgolf.config import Config, _all_fields, load_config
from pgolf.errors import ConfigError

# Free-text fields: paths, a run name and tensor-name patterns have no range to declare.
FREE_TEXT = {"train.run_id", "data.data_path", "data.tokenizer_path", "model.control_patterns", "train.expected_host"}


def _kind(key: str):
    section, name = key.split(".", 1)
    return get_type_hints(type(getattr(Config(), section)))[name]


def _bad_value(key: str, meta) -> str:
    """A value outside the field's declared range (or its type)."""
    typ = _kind(key)
    if typ is bool:
        return "maybe"
    if meta.get("choices") is not None:
        return "no-such-choice"
    if key == "runtime.device":
        return "tpu"
    if key == "data.caseops":
        return "perhaps"
    for k in ("le", "lt"):
        if meta.get(k) is not None:
            return str(int(meta[k]) * 10 + 10) if typ in (int, tuple[int, ...]) else repr(float(meta[k]) * 10 + 10)
    for k in ("ge", "gt"):
        if meta.get(k) is not None:
            return str(int(meta[k]) - 10) if typ in (int, tuple[int, ...]) else repr(float(meta[k]) - 10)
    raise AssertionError(f"{key} declares no range")


FIELDS = sorted(_all_fields())


@pytest.mark.parametrize("key", [k for k in FIELDS if k not in FREE_TEXT])
def test_every_field_refuses_a_bad_value_in_one_line(key):
    _, f = _all_fields()[key]
    bad = _bad_value(key, f.metadata)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config("record", [f"{key}={bad}"], environ={})
    assert "\n" not in str(e.value)


FLOATS = [k for k in FIELDS if _kind(k) is float]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOATS)
def test_every_float_field_refuses_nan_and_inf(key, value):
    _, f = _all_fields()[key]
    if value == "inf" and f.metadata.get("allow_inf"):
        cfg = load_config("record", [f"{key}={value}"], environ={})  # an infinite budget: no cap
        assert math.isinf(getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]))
        return
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("record", [f"{key}={value}"], environ={})


@pytest.mark.parametrize(
    "item",
    [
        "model.model_dim=1000000000",
        "model.mlp_mult=nan",
        "model.mlp_mult=inf",
        "model.tied_embed_init_std=-1",
        "optim.beta1=2",
        "optim.adam_eps=-1",
        "train.max_wallclock_seconds=nan",
        "optim.grad_clip_norm=nan",
        "model.num_layers=100000",
    ],
)
def test_the_issues_values_are_refused(item):
    with pytest.raises(ConfigError, match=item.split("=")[0].replace(".", r"\.")):
        load_config("record", [item], environ={})


def test_every_preset_is_within_the_ranges():
    from pgolf.config import available_presets

    for p in available_presets():
        load_config(p, environ={})


def test_a_config_json_out_of_range_is_refused():
    d = Config().to_dict()
    d["model"]["model_dim"] = 2**70
    with pytest.raises(ConfigError, match="model.model_dim"):
        Config.from_dict(d)
