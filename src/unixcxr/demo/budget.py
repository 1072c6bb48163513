"""The demo's recipes and time budget: what `unixcxr demo --help` shows, without importing torch."""

DEFAULT_RECIPE = "small.yaml"
GPU_RECIPE = "gpu.yaml"  # the same pipeline at the scale one GPU runs in minutes
NOMINAL_TRAIN_MINUTES = 18.1  # what configs/small.yaml takes on 2 free CPU cores (2026-12-02)
# privacy and utility of the trained model (100 films from training prompts, the nearest-neighbour search
# over ~1,750 training films, 3 x 100 fine-tuning steps at 128 px): an estimate, not yet timed on free cores
SYNTHETIC_USE_MINUTES = 5.0
FIXED_MINUTES = 4.5 + SYNTHETIC_USE_MINUTES  # synthesis + evaluations + privacy / utility + report, default sizes
MIN_STEP_FACTOR = 0.02
DEFAULT_BUDGET_MINUTES = 24.0 + SYNTHETIC_USE_MINUTES  # the whole demo at full size on 2 free cores
