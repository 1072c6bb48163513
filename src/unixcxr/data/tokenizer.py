"""The report tokenizer's old address: it lives in unixcxr.model.tokenizer, beside the model folder
that carries it (model/io.py saves and loads it). This name is the same module object."""

import sys

from unixcxr.model import tokenizer

sys.modules[__name__] = tokenizer
