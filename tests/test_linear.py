"""model/linear.py: the decoding path (cached contiguous W^T) computes what nn.Linear computes, follows
every change of the weight, and leaves training (autograd) on nn.Linear's own path."""

import torch

from unixcxr.model import linear
from unixcxr.model.linear import Linear


def test_transposed_path_matches_nn_linear_and_follows_weight_changes():
    torch.manual_seed(0)
    layer = Linear(48, 80)
    ref = torch.nn.Linear(48, 80)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(5, 1, 48)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref(x))
        assert layer._transposed is not None and layer._transposed.shape == (48, 80)
        # an in-place update (an optimizer step, load_state_dict) must not leave a stale W^T behind
        layer.weight.mul_(2.0)
        ref.weight.mul_(2.0)
        torch.testing.assert_close(layer(x), ref(x))
        layer.load_state_dict(torch.nn.Linear(48, 80).state_dict())
        ref.load_state_dict(layer.state_dict())
        torch.testing.assert_close(layer(x), ref(x))
    linear.drop_transposed(layer)
    assert layer._transposed is None


def test_training_and_large_inputs_take_the_plain_path():
    layer = Linear(16, 8)
    x = torch.randn(3, 16, requires_grad=True)
    layer(x).sum().backward()  # with autograd: nn.Linear's product, gradients to weight and input
    assert layer.weight.grad is not None and x.grad is not None and layer._transposed is None
    with torch.no_grad():
        layer(torch.randn(linear.ROW_LIMIT + 1, 16))  # many rows: the plain product
    assert layer._transposed is None


def test_large_weights_are_not_duplicated(monkeypatch):
    monkeypatch.setattr(linear, "MAX_WEIGHT_ELEMENTS", 100)
    layer = Linear(16, 8)  # 128 elements
    with torch.no_grad():
        layer(torch.randn(2, 16))
    assert layer._transposed is None
