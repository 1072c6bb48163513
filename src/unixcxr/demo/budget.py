"""The demo's recipes and time budget: what `unixcxr demo --help` shows, without importing torch."""

DEFAULT_RECIPE = "small.yaml"
GPU_RECIPE = "gpu.yaml"  # the same pipeline at the scale one GPU runs in minutes
NOMINAL_TRAIN_MINUTES = 15.5  # what configs/small.yaml takes on 2 CPU cores (2026-12-07: 928 s)
# privacy and utility of the trained model (100 films from training prompts, the nearest-neighbour search
# over ~2,000 training films, 3 x 100 fine-tuning steps at 128 px): 2.7 minutes on 2026-12-07
SYNTHETIC_USE_MINUTES = 3.0
FIXED_MINUTES = 2.0 + SYNTHETIC_USE_MINUTES  # synthesis + evaluations + privacy / utility + report (4.6 measured)
MIN_STEP_FACTOR = 0.02
DEFAULT_BUDGET_MINUTES = 25.0  # the whole demo at full size on 2 cores (20.1 minutes measured on 2026-12-07)
