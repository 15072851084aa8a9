"""Each model component against a direct computation of SPEC's formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import load_config
from pgolf.model import build_model, count_params
from pgolf.model.attention import xsa
from pgolf.model.embeddings import bigram_ids
from pgolf.model.layers import apply_partial_rope, fake_quant_int6, layer_scale, ntk_rope_base, rope_tables


def small_cfg(**over):
    sets = [
        "model.num_layers=4",
        "model.model_dim=128",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.ve_layers=2,3",
        "model.xsa_last_n=4",
        "model.bigram_dim=64",
        "model.ve_dim=64",
    ]
    sets += [f"{k}={v}" for k, v in over.items()]
    return load_config("record", sets, environ={})


def test_record_param_count_equals_seed():
    cfg = load_config("record", environ={})
    model = build_model(cfg.model, seed=1337)
    assert count_params(model) == 26_862_694  # SPEC §4.15, logged model_params:26862694
    assert len(model.state_dict()) == 131


def test_record_dtypes_and_bf16_rounded_inits():
    model = build_model(load_config("record", environ={}).model, seed=1)
    assert model.tok_emb.weight.dtype == torch.bfloat16
    assert model.bigram.embed.weight.dtype == torch.bfloat16
    assert model.blocks[0].attn.c_q.weight.dtype == torch.float32
    assert model.bigram.scale.item() == 0.050048828125
    assert model.ve_shared.scale.item() == 0.10009765625
    assert model.blocks[0].attn.vrl_gate is None and model.blocks[1].attn.vrl_gate.item() == -1.5
    assert torch.all(model.blocks[3].attn.proj.weight == 0) and torch.all(model.blocks[3].mlp.proj.weight == 0)
    # bigram.proj: orthogonal then x 1/sqrt(2L); columns orthogonal with norm 1/sqrt(22) (up to bf16 rounding)
    w = model.bigram.proj.weight.double()
    gram = w.T @ w
    assert torch.allclose(gram, torch.eye(128, dtype=torch.float64) / 22, atol=2e-3)


def test_init_is_deterministic_for_a_seed():
    cfg = small_cfg()
    a, b = build_model(cfg.model, seed=7).state_dict(), build_model(cfg.model, seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bigram_hash_ids():
    ids = torch.tensor([[5, 1000, 3, 3, 1023]])
    got = bigram_ids(ids, 1024)
    assert got[0, 0].item() == 1023  # reserved "no predecessor" bucket, even mid-stream
    for t in range(1, 5):
        cur, prev = int(ids[0, t]), int(ids[0, t - 1])
        assert got[0, t].item() == ((36313 * cur) ^ (27191 * prev)) % 1023
    assert int(got[0, 1:].max()) <= 1022


def test_partial_rope_matches_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 32)
    cos, sin = rope_tables(5, 16, 10000.0, 1024, torch.device("cpu"), table="fp32")
    y = apply_partial_rope(x, cos, sin)
    for t in range(5):
        for j in range(8):
            theta = t / (10000.0 ** (2 * j / 16))
            x1, x2 = x[..., t, :, j], x[..., t, :, 8 + j]
            assert torch.allclose(y[..., t, :, j], x1 * math.cos(theta) + x2 * math.sin(theta), atol=1e-5)
            assert torch.allclose(y[..., t, :, 8 + j], -x1 * math.sin(theta) + x2 * math.cos(theta), atol=1e-5)
    assert torch.equal(y[..., 16:], x[..., 16:])  # the other channels pass through


def test_ntk_base_rescaling():
    assert ntk_rope_base(10000.0, 1024, 16, 1024) == 10000.0
    assert ntk_rope_base(10000.0, 2048, 16, 1024) == pytest.approx(22081.79, rel=1e-6)  # SPEC appendix A


def test_xsa_removes_component_along_own_value():
    torch.manual_seed(0)
    y = torch.randn(2, 4, 6, 8)
    v = torch.randn(2, 4, 3, 8)
    out = xsa(y, v)
    for h in range(6):
        vh = v[:, :, h // 2]
        vhat = vh / vh.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        want = y[:, :, h] - (y[:, :, h] * vhat).sum(-1, keepdim=True) * vhat
        assert torch.allclose(out[:, :, h], want, atol=1e-6)
        assert (out[:, :, h] * vhat).sum(-1).abs().max() < 1e-5


def test_softcap_and_logit_bias():
    model = build_model(small_cfg().model, seed=0).eval()
    h = torch.randn(2, 3, 128) * 50
    bias = torch.randn(2, 1, 1024)
    raw = h @ model.tok_emb.weight.float().T
    assert torch.allclose(model.compute_logits(h), 30 * torch.tanh(raw / 30), atol=1e-4)
    assert torch.allclose(model.compute_logits(h, bias), 30 * torch.tanh((raw + bias) / 30), atol=1e-4)
    assert model.compute_logits(h).abs().max() <= 30


def test_qat_fake_quantiser():
    torch.manual_seed(0)
    w = torch.randn(4, 64) * torch.tensor([[3.0], [0.5], [0.01], [40.0]])
    q = fake_quant_int6(w)
    for r in range(4):
        step = max(w[r].abs().max().item() / 31, 1 / 31)
        want = torch.clamp(torch.round(w[r] / step), -32, 31) * step
        assert torch.allclose(q[r], want, atol=1e-6)
    # straight-through: forward uses the quantised weight, gradient flows as identity
    model = build_model(small_cfg().model, seed=0)
    lin = model.blocks[0].attn.c_q
    lin.qat = True
    lin.train()
    x = torch.randn(3, 128, requires_grad=True)
    out = lin(x)
    assert torch.allclose(out, x @ fake_quant_int6(lin.weight).T, atol=1e-5)
    out.sum().backward()
    assert torch.allclose(lin.weight.grad, torch.ones(3, 128).T @ x.detach(), atol=1e-5)  # identity STE


@pytest.mark.slow
def test_compiled_forward_matches_eager_and_follows_the_qat_switch():
    """torch.compile must not freeze late QAT out (SPEC 11.2 item 8): the switch recompiles the graph."""
    cfg = small_cfg(
        **{
            "model.num_layers": 2,
            "model.ve_layers": 1,
            "model.xsa_last_n": 2,
            "model.model_dim": 64,
            "model.num_heads": 2,
            "model.num_kv_heads": 1,
            "model.embed_dtype": "float32",
        }
    )
    model = build_model(cfg.model, seed=0).train()
    with torch.no_grad():  # zero-initialised projections would hide QAT's effect
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ids = torch.randint(0, cfg.model.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    fn = torch.compile(model.forward_hidden, fullgraph=True, dynamic=False)
    try:
        off = fn(ids)
    except torch._dynamo.exc.BackendCompilerFailed as e:  # no C compiler on this machine
        pytest.skip(f"torch.compile backend unavailable: {e}")
    assert torch.allclose(off, model.forward_hidden(ids), atol=1e-4)
    model.set_qat(True)
    on = fn(ids)
    assert torch.allclose(on, model.forward_hidden(ids), atol=1e-4)
    assert (on - off).abs().max() > 1e-2


def test_layer_scale():
    assert [round(layer_scale(i, True), 6) for i in (0, 1, 10)] == [1.0, 0.707107, 0.301511]
    assert layer_scale(5, False) == 1.0


def test_forward_hidden_is_causal_and_shared_by_loss():
    model = build_model(small_cfg().model, seed=0).eval()
    ids = torch.randint(0, 1024, (2, 32))
    h = model.forward_hidden(ids)
    ids2 = ids.clone()
    ids2[:, 20:] = (ids2[:, 20:] + 7) % 1024
    h2 = model.forward_hidden(ids2)
    assert torch.equal(h[:, :20], h2[:, :20])
    assert not torch.allclose(h[:, 20:], h2[:, 20:])
    targets = torch.randint(0, 1024, (2, 32))
    loss = model(ids, targets)
    want = F.cross_entropy(model.compute_logits(h).reshape(-1, 1024), targets.reshape(-1))
    assert torch.allclose(loss, want, atol=1e-6)
    assert loss.item() == pytest.approx(math.log(1024), abs=0.05)  # tiny-std tied init: near-uniform output


def test_mtp_heads_add_loss_in_training_only():
    cfg = small_cfg(**{"model.mtp_num_heads": 2})
    model = build_model(cfg.model, seed=0)
    with torch.no_grad():
        for head in model.mtp_heads:
            head.weight.normal_(0, 0.1)
    ids, tg = torch.randint(0, 1024, (2, 16)), torch.randint(0, 1024, (2, 16))
    model.train()
    lt = model(ids, tg)
    model.eval()
    le = model(ids, tg)
    assert lt.item() > le.item()


@pytest.mark.parametrize(
    "override, field",
    [
        ({"model.model_dim": 130}, "model.num_heads"),
        ({"model.model_dim": 120, "model.num_heads": 8, "model.num_kv_heads": 4}, "head dim must be even"),
        ({"model.num_kv_heads": 3}, "model.num_kv_heads"),
        ({"model.rope_dims": 40}, "model.rope_dims"),
        ({"model.xsa_last_n": 5}, "model.xsa_last_n"),
        ({"model.ve_layers": "1,7"}, "model.ve_layers"),
        ({"model.logit_softcap": 0}, "model.logit_softcap"),
        ({"eval.stride": 4096}, "eval.stride"),
        ({"train.train_batch_tokens": 1000}, "train.train_batch_tokens"),
    ],
)
def test_impossible_configs_are_refused_naming_the_field(override, field):
    from pgolf.errors import ConfigError

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        small_cfg(**override)
