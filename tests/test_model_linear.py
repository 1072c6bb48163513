"""The swapped CPU product of model.linear.Linear: the same numbers as F.linear, taken only where it
is meant to be (inference, fp32, CPU, a skinny batch of rows)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.model import linear
from unixcxr.model.linear import Linear


def _layer(bias: bool) -> Linear:
    torch.manual_seed(0)
    return Linear(96, 160, bias=bias).eval()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(16, 96), (12, 1, 96), (3, 4, 96)])
def test_skinny_rows_take_the_swapped_product_with_the_numbers_of_f_linear(bias, shape):
    layer, x = _layer(bias), torch.randn(*shape)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (*shape[:-1], 160)
    assert not out.is_contiguous()  # the transposed view: the swapped product ran
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 8, 49, 300])
def test_other_row_counts_run_f_linear(rows):
    layer, x = _layer(True), torch.randn(rows, 96)
    with torch.no_grad():
        out = layer(x)
    assert out.is_contiguous()
    assert torch.equal(out, F.linear(x, layer.weight, layer.bias))


def test_training_autograd_and_the_switch_run_f_linear(monkeypatch):
    layer, x = _layer(True), torch.randn(16, 96)
    out = layer(x)  # autograd on
    assert out.is_contiguous()
    out.square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert layer.train()(x).is_contiguous()  # a frozen layer of a training step
        layer.eval()
        monkeypatch.setattr(linear, "SKINNY_ROWS", None)
        assert layer(x).is_contiguous()


def test_state_dict_is_nn_linears():
    plain = nn.Linear(96, 160)
    ours = Linear(96, 160)
    ours.load_state_dict(plain.state_dict())
    assert set(ours.state_dict()) == {"weight", "bias"}
    assert isinstance(ours, nn.Linear)


def test_batched_decoding_is_the_same_with_and_without_the_swapped_products(tiny_model, monkeypatch):
    torch.manual_seed(5)
    images, prompts = torch.randn(12, 3, 32, 32), [[10 + i, 11, 12] for i in range(12)]  # 12 rows a step
    settings = DecodingSettings(max_new_tokens=8)
    swapped, swapped_logits = generate_reports(tiny_model, images, prompts, settings, return_logits=True)
    monkeypatch.setattr(linear, "SKINNY_ROWS", None)
    plain, plain_logits = generate_reports(tiny_model, images, prompts, settings, return_logits=True)
    assert swapped == plain
    for a, b in zip(swapped_logits, plain_logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
