import pytest
import torch

from unixcxr.model.config import tiny
from unixcxr.model.unix import UniX


@pytest.fixture
def tiny_model() -> UniX:
    """A tiny UniX with large random weights everywhere (llm2vae included), so that every path
    carries signal and a broken mask or cache shows up in the outputs."""
    torch.manual_seed(0)
    model = UniX(tiny()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("vision"):
                p.normal_(0, 0.15)
        model.init_gen_from_und()
        for layer in model.layers:  # then make the experts differ, so routing matters
            for p in layer.gen.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return model
