"""One validation layer for the numbers a user hands any entry point: command-line options, JSON
API fields, pipeline arguments, sampler and decoding settings. Each number is checked here, once,
so the CLI, the server and Python callers refuse the same values in the same words.

Why a layer at all: NaN, infinities, negative guidance scales, an inverted guidance interval or a
seed torch cannot take do not fail where they enter; they write an all-black image with exit
status 0, or raise deep inside a batch shared with other people's requests. A value that passes
here can run.

    check("cfg_text", 2.0)               -> 2.0
    check("steps", "12")                 -> 12 (text from a form field or a query string)
    check("seed", 2**70)                 -> InvalidValue: seed must be an integer from 0 to 2**63 - 1, got ...

Callers name the value their own way: InvalidValue.named("--cfg-text") for the CLI, the field name
as it is for the JSON API."""

from __future__ import annotations

import math
from dataclasses import dataclass

SEED_MAX = 2**63 - 1  # a signed 64-bit seed: torch.Generator takes it, and so does every JSON client
MAX_STEPS = 10_000  # sampler grid points: beyond this a run takes days and gains nothing
MAX_GUIDANCE = 20.0  # guidance scales used in practice are 1-10; above ~20 the velocity explodes
MAX_SHIFT = 100.0
# How guidance branches combine (flow.sampler.SamplerSettings.guidance, a model's conventions.guidance)
GUIDANCE_RULES = ("unixcxr", "released")


class InvalidValue(ValueError):
    """A number outside what it may be. `name` is the canonical (Python and JSON) name; the message
    says what the value must be and what it was."""

    def __init__(self, name: str, value: object, rule: str):
        self.name, self.value, self.rule = name, value, rule
        super().__init__(self.named(name))

    def named(self, shown: str) -> str:
        """The message with the value called `shown` (e.g. the CLI's "--cfg-text")."""
        return f"{shown} must be {self.rule}, got {_show(self.value)}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Rule:
    """An integer or a finite float within [lo, hi] (either bound open or absent)."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def describe(self, hi: float | None) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        lo = self.lo
        if lo is not None and hi is not None:
            left = "(" if self.lo_open else "["
            if self.kind is int:
                return f"{noun} from {lo} to {_bound(hi)}"
            return f"{noun} in {left}{lo:g}, {hi:g}]"
        if lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {lo:g}"
        return noun if hi is None else f"{noun} <= {hi:g}"


def _bound(hi: float) -> str:
    return "2**63 - 1" if hi == SEED_MAX else str(hi)


RULES = {
    "steps": Rule(int, 2, MAX_STEPS),  # sampler grid points (the release's "50 steps")
    "num_inference_steps": Rule(int, 1, MAX_STEPS - 1),  # Euler steps, diffusers' count: steps - 1
    "cfg_text": Rule(float, 0.0, MAX_GUIDANCE),
    "guidance_scale": Rule(float, 0.0, MAX_GUIDANCE),  # diffusers' name for cfg_text
    "cfg_img": Rule(float, 0.0, MAX_GUIDANCE),
    "shift": Rule(float, 0.0, MAX_SHIFT, lo_open=True),
    "temperature": Rule(float, 0.0),
    "top_p": Rule(float, 0.0, 1.0, lo_open=True),
    "max_new_tokens": Rule(int, 1),  # the upper bound is the model's (its positions) or the server's
    "batch_size": Rule(int, 1),
    "seed": Rule(int, 0, SEED_MAX),
    "size": Rule(int, 1),
}


def _number(name: str, value: object, rule: Rule, hi: float | None) -> int | float:
    """value as the rule's kind: ints (and integral floats, and their text) for an int rule, any real
    number or its text for a float rule; bools are refused (JSON true is not 1)."""
    fail = InvalidValue(name, value, rule.describe(hi))
    if isinstance(value, bool):
        raise fail
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if rule.kind is int and text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise fail from None
    if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        raise fail
    if rule.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise fail
        return int(value)
    return float(value)


def check(name: str, value: object, *, hi: float | None = None) -> int | float:
    """The value of the named number, converted to its kind, or InvalidValue. hi: a tighter upper
    bound than the rule's (a server's limit, a model's capacity)."""
    rule = RULES[name]
    if hi is None or (rule.hi is not None and rule.hi < hi):
        hi = rule.hi
    number = _number(name, value, rule, hi)
    below = rule.lo is not None and (number <= rule.lo if rule.lo_open else number < rule.lo)
    if below or (hi is not None and number > hi):
        raise InvalidValue(name, value, rule.describe(hi))
    return number


def check_optional(name: str, value: object, *, hi: float | None = None) -> int | float | None:
    """check(), with None (and an empty form field) meaning 'not given'."""
    return None if value is None or value == "" else check(name, value, hi=hi)


def check_interval(name: str, value: object) -> tuple[float, float]:
    """A guidance interval (lo, hi): guidance applies while lo < t <= hi, so 0 <= lo < hi <= 1."""
    rule = "two finite numbers 0 <= LO < HI <= 1"
    try:
        lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InvalidValue(name, value, rule) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 1.0):
        raise InvalidValue(name, value, rule)
    return lo, hi


def check_seeds(seeds: list[int]) -> list[int]:
    """Every seed of a batch (seed + i for image i) within what torch.Generator takes."""
    return [check("seed", s) for s in seeds]
