"""The fused element-wise functions of the model (soft-capped CE, the MLP activation) against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.model import softcap_ce
from pgolf.model.softcap_ce import softcap_cross_entropy


@pytest.mark.parametrize("cap", [30.0, 50.0])  # 50: the path with a max pass (exp(2c) would overflow fp32)
@pytest.mark.parametrize("block", [1 << 18, 700])  # one block; many blocks, the last one short
def test_loss_and_gradient_equal_the_unfused_chain(monkeypatch, cap, block):
    monkeypatch.setattr(softcap_ce, "CPU_BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(37, 96, generator=g) * 60).requires_grad_()  # large enough for the cap to bite
    t = torch.randint(0, 96, (37,), generator=g)
    ref_x = x.detach().double().requires_grad_()
    ref = F.cross_entropy(cap * torch.tanh(ref_x / cap), t)
    ref.backward()
    got = softcap_cross_entropy(x, t, cap)
    (got * 3).backward()  # an upstream gradient other than 1 is scaled through
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(x.grad.double(), 3 * ref_x.grad, atol=1e-7)


def test_bf16_logits_give_a_bf16_gradient_from_fp32_math():
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(8, 64, generator=g) * 40).bfloat16().requires_grad_()
    t = torch.randint(0, 64, (8,), generator=g)
    got = softcap_cross_entropy(x, t, 30.0)
    got.backward()
    ref_x = x.detach().float().requires_grad_()
    F.cross_entropy(30 * torch.tanh(ref_x / 30), t).backward()
    assert got.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    assert torch.allclose(x.grad.float(), ref_x.grad, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_leaky_relu_square_is_the_two_op_chain_bit_for_bit(dtype):
    from pgolf.model.layers import leaky_relu_square

    g = torch.Generator().manual_seed(2)
    x = (torch.randn(300, 77, generator=g) * 3).to(dtype).requires_grad_()
    up = torch.randn(300, 77, generator=g).to(dtype)
    ref = F.leaky_relu(x, 0.5).square()
    ref.backward(up)
    want, x.grad = x.grad.clone(), None
    got = leaky_relu_square(x)
    got.backward(up)
    assert torch.equal(got, ref) and torch.equal(x.grad, want)
