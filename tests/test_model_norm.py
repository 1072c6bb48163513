"""RMSNorm's CPU inference path (one vector_norm reduction) must be torch's rms_norm."""

import pytest
import torch
import torch.nn.functional as F

from unixcxr.model.mot import RMSNorm


@pytest.mark.parametrize("eps", [1e-6, None])
def test_cpu_rms_norm_without_autograd_equals_torch_rms_norm(eps):
    torch.manual_seed(0)
    norm = RMSNorm(64, eps=eps)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(5, 7, 64) * 4
    with torch.no_grad():
        fast = norm(x)
    assert torch.allclose(fast, F.rms_norm(x, (64,), norm.weight.detach(), eps), atol=1e-5)
    assert torch.allclose(fast, norm(x).detach(), atol=1e-5)  # the autograd path (F.rms_norm) agrees


def test_cpu_rms_norm_of_a_zero_row_is_zero():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        out = norm(torch.zeros(2, 8))
    assert torch.equal(out, torch.zeros_like(out))


def test_bf16_input_is_normalised_in_float32_and_returned_in_bf16():
    norm = RMSNorm(16)
    x = torch.randn(3, 16) * 100
    with torch.no_grad():
        out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), F.rms_norm(x.bfloat16().float(), (16,), norm.weight, None), atol=2e-2)
