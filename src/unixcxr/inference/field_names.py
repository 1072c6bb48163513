"""The argument names of the field's libraries, mapped once onto ours, so a diffusers or transformers
user can call the pipeline, the CLI and the HTTP API as they are used to:

    num_inference_steps  Euler steps, diffusers' count   -> steps = num_inference_steps + 1 grid points
                                                            (the release's count: "50 steps" = 49 Euler)
    guidance_scale       text guidance, diffusers' name   -> cfg_text
    generator            torch.Generator(s) for the noise -> instead of integer seeds
    torch_dtype          the weights' dtype               -> dtype

Our names stay valid; giving both names of one value is allowed only when they agree."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unixcxr.validation import InvalidValue, check

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
Generators = torch.Generator | Sequence[torch.Generator]


def grid_points(steps: object, num_inference_steps: object, max_points: int | None = None) -> int | None:
    """The sampler's grid points from `steps` (grid points) or `num_inference_steps` (Euler steps),
    checked by the shared rules (max_points: a server's tighter limit)."""
    steps = None if steps is None else check("steps", steps, hi=max_points)
    if num_inference_steps is None:
        return steps
    hi = None if max_points is None else max_points - 1
    n = check("num_inference_steps", num_inference_steps, hi=hi)
    if steps is not None and steps != n + 1:
        raise InvalidValue("num_inference_steps", num_inference_steps,
                           f"steps - 1 = {steps - 1} when steps (grid points) is given too; give one of them")
    return n + 1


def text_guidance(cfg_text: object, guidance_scale: object) -> float | None:
    """cfg_text from either name."""
    cfg_text = None if cfg_text is None else check("cfg_text", cfg_text)
    if guidance_scale is None:
        return cfg_text
    scale = check("guidance_scale", guidance_scale)
    if cfg_text is not None and cfg_text != scale:
        raise InvalidValue("guidance_scale", guidance_scale, f"equal to cfg_text ({cfg_text:g}) when both are given")
    return scale


def weights_dtype(dtype: torch.dtype | str | None, torch_dtype: torch.dtype | str | None,
                  default: torch.dtype = torch.float32) -> torch.dtype:
    """A torch dtype from `dtype` or `torch_dtype` (a torch.dtype or its name: "bfloat16", "bf16", ...)."""
    if dtype is not None and torch_dtype is not None and _dtype(dtype) != _dtype(torch_dtype):
        raise ValueError(f"dtype {dtype} and torch_dtype {torch_dtype} disagree; give one of them")
    chosen = torch_dtype if torch_dtype is not None else dtype
    return default if chosen is None else _dtype(chosen)


def _dtype(value: torch.dtype | str) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in DTYPES:
        return DTYPES[value.removeprefix("torch.")]
    raise ValueError(f"dtype {value!r} is not a torch dtype nor one of {sorted(DTYPES)}")


def generator_noise(generator: Generators, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """[n, *shape] standard normal noise, as diffusers draws it: one generator draws the whole batch,
    a list draws image i from generator[i]. A generator seeded s draws, for one image, exactly the
    noise of seed=s (both are torch.randn((1, *shape)) from a generator in the state manual_seed(s))."""
    if isinstance(generator, torch.Generator):
        return torch.randn((n, *shape), generator=generator, device=generator.device).cpu()
    generators = list(generator)
    if len(generators) != n or not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(f"generator must be one torch.Generator or a list of {n} (one per report), got "
                         f"{len(generators)} item(s)")
    return torch.cat([torch.randn((1, *shape), generator=g, device=g.device).cpu() for g in generators])
