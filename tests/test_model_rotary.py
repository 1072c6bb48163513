"""RoPE (rotate-half convention): apply_rotary's in-place halves and its inverse-rotation backward."""

import torch

from unixcxr.model.embedders import RotaryEmbedding, apply_rotary


def _rope(positions: torch.Tensor, dtype=torch.float64):
    return RotaryEmbedding(64, 10000.0)(positions, dtype)


def test_apply_rotary_is_the_rotate_half_formula_with_its_gradient():
    torch.manual_seed(0)
    cos, sin = _rope(torch.randint(0, 500, (3, 7)))
    x = torch.randn(3, 7, 4, 64, dtype=torch.float64, requires_grad=True)
    x1, x2 = x.chunk(2, dim=-1)
    expected = x * cos + torch.cat((-x2, x1), dim=-1) * sin
    torch.testing.assert_close(apply_rotary(x, cos, sin), expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, cos, sin), (x,))
    view = torch.randn(3, 7, 6 * 64, dtype=torch.float64)[..., 64:].unflatten(-1, (5, 64))  # a strided view
    torch.testing.assert_close(apply_rotary(view, cos, sin), apply_rotary(view.contiguous(), cos, sin))


def test_rotation_keeps_norms_and_scores_depend_on_relative_position_only():
    torch.manual_seed(1)
    q, k = torch.randn(2, 1, 1, 64, dtype=torch.float64).unbind(0)

    def score(m: int, n: int) -> torch.Tensor:
        cq, sq = _rope(torch.tensor([[m]]))
        ck, sk = _rope(torch.tensor([[n]]))
        rq, rk = apply_rotary(q[None], cq, sq), apply_rotary(k[None], ck, sk)
        torch.testing.assert_close(rq.norm(), q.norm())
        return (rq * rk).sum()

    torch.testing.assert_close(score(10, 3), score(107, 100), rtol=1e-4, atol=1e-4)  # float32 angles
    torch.testing.assert_close(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(10, 3), score(10, 4))


def test_the_inverse_rotation_undoes_the_rotation():
    torch.manual_seed(2)
    positions = torch.randint(0, 300, (2, 5))
    x = torch.randn(2, 5, 3, 64, dtype=torch.float64)
    back = apply_rotary(apply_rotary(x, *_rope(positions)), *_rope(-positions))
    torch.testing.assert_close(back, x)
