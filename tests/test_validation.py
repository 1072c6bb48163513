"""The one validation layer for numbers (unixcxr.validation): what passes, what is refused and in
which words, and that the sampler, the decoder and the pipeline use it (so Python callers, the CLI
and the server refuse the same values)."""

import math

import pytest

from unixcxr.flow.sampler import SamplerSettings
from unixcxr.inference.report import DecodingSettings
from unixcxr.validation import InvalidValue, check, check_interval, check_optional

ACCEPTED = [("steps", "12", 12), ("steps", 4.0, 4), ("steps", 2, 2), ("cfg_text", 0, 0.0), ("cfg_text", "2.5", 2.5),
            ("top_p", 1, 1.0), ("seed", 2**63 - 1, 2**63 - 1), ("seed", " 7 ", 7), ("temperature", 0.0, 0.0)]
REFUSED = [("steps", 1, "an integer from 2 to 10000"), ("steps", 4.5, "an integer"), ("steps", True, "an integer"),
           ("steps", "many", "an integer"), ("cfg_text", math.nan, "a finite number in [0, 20]"),
           ("cfg_text", math.inf, "finite"), ("cfg_text", -0.5, "[0, 20]"), ("cfg_img", 1e30, "[0, 20]"),
           ("shift", 0, "(0, 100]"), ("top_p", 0, "(0, 1]"), ("top_p", 1.5, "(0, 1]"),
           ("temperature", -1, ">= 0"), ("max_new_tokens", 0, ">= 1"), ("batch_size", 0, ">= 1"),
           ("seed", -1, "from 0 to 2**63 - 1"), ("seed", 2**70, "from 0 to 2**63 - 1"), ("seed", 1e400, "an integer"),
           ("seed", [1], "an integer"), ("size", None, "an integer")]


@pytest.mark.parametrize("name, value, expected", ACCEPTED)
def test_valid_values_pass_converted_to_their_kind(name, value, expected):
    assert check(name, value) == expected and type(check(name, value)) is type(expected)


@pytest.mark.parametrize("name, value, rule", REFUSED, ids=[f"{r[0]}={r[1]!r}" for r in REFUSED])
def test_invalid_values_are_refused_naming_the_value_and_the_rule(name, value, rule):
    with pytest.raises(InvalidValue) as err:
        check(name, value)
    assert str(err.value).startswith(f"{name} must be ") and rule in str(err.value)
    assert err.value.named("--x").startswith("--x must be ")


def test_a_tighter_bound_names_itself_and_cannot_loosen_the_rule():
    with pytest.raises(InvalidValue, match="from 1 to 512"):
        check("max_new_tokens", 513, hi=512)
    with pytest.raises(InvalidValue, match="from 2 to 10000"):
        check("steps", 20_000, hi=10**9)
    assert check_optional("steps", None) is None and check_optional("steps", "") is None


@pytest.mark.parametrize("interval", [(0.9, 0.1), (0.5, 0.5), (-0.1, 1.0), (0.0, 1.5), (math.nan, 1.0), (0.1,), "ab"])
def test_a_guidance_interval_must_be_ordered_inside_0_1(interval):
    with pytest.raises(InvalidValue, match="0 <= LO < HI <= 1"):
        check_interval("cfg_interval", interval)


@pytest.mark.parametrize("fields", [dict(cfg_text=math.nan), dict(cfg_img=-1.0), dict(shift=-3.0),
                                    dict(cfg_interval=(1.0, 0.4)), dict(num_points=1)])
def test_sampler_settings_refuse_what_would_draw_garbage(fields):
    with pytest.raises(InvalidValue):
        SamplerSettings(**fields)


@pytest.mark.parametrize("fields", [dict(max_new_tokens=0), dict(max_new_tokens=-5), dict(temperature=-0.1),
                                    dict(top_p=0.0), dict(temperature=math.inf)])
def test_decoding_settings_refuse_what_would_decode_nothing_or_garbage(fields):
    with pytest.raises(InvalidValue):
        DecodingSettings(**fields)
