"""The frontier network (PR #1855) as options of pgolf's model, against the record's own code.

`tests/fixtures/frontier_model.*` were made by running the record's `train_gpt.py` on the CPU
(tests/fixtures/gen_frontier_model.py says how); FRONTIER.md's tables give the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _cpu import cpu_vendor
from safetensors.torch import load_file

from pgolf.config import load_config
from pgolf.errors import ArtifactError, ConfigError
from pgolf.model import build_model, count_params
from pgolf.model import doc_attention as da
from pgolf.model.gates import input_smear, skip_merge
from pgolf.model.gpt import GPT
from pgolf.model.record_names import from_record_state_dict, record_table, tensor_table, to_record_state_dict
from pgolf.model.recurrence import layer_schedule, num_skip_rows, skip_sources, virtual_layers
from pgolf.train.optim import group_sizes, route_parameters

FIX = Path(__file__).parent / "fixtures"
META = json.loads((FIX / "frontier_model.json").read_text())


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIX / "frontier_model.safetensors"))


@contextlib.contextmanager
def one_thread():
    """Orthogonal init (QR) and the reference values were computed with one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def fixture_config(*sets: str):
    """pgolf's frontier preset with the fixture's record settings, given as the record's env names."""
    env = {k: str(v) for k, v in META["env"].items()}
    return load_config("frontier", [f"model.doc_max_len={META['max_doc_len']}", *sets], environ=env)


def fixture_model(fx):
    model = build_model(fixture_config("model.embed_dtype=float32").model, seed=0).eval()
    w = {k[2:]: v.float() for k, v in fx.items() if k.startswith("w.")}
    model.load_state_dict(from_record_state_dict(w, META["env"]["NUM_LAYERS"]))
    return model


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


# F2.11, tensor by tensor (names are the record's; banks as one row each)
F2_11 = {
    "tok_emb.weight": ([8192, 512], "embed"),
    "qo_bank": ([22, 512, 512], "matrix"),
    "kv_bank": ([22, 256, 512], "matrix"),
    "mlp_up_bank": ([11, 2048, 512], "matrix"),
    "mlp_down_bank": ([11, 512, 2048], "matrix"),
    **{f"blocks.{i}.attn.q_gain": ([8], "scalar") for i in range(11)},
    **{f"blocks.{i}.attn.attn_gate_w": ([8, 12], "scalar") for i in range(11)},
    **{f"blocks.{i}.attn_scale": ([512], "scalar") for i in range(11)},
    **{f"blocks.{i}.mlp_scale": ([512], "scalar") for i in range(11)},
    **{f"blocks.{i}.resid_mix": ([2, 512], "scalar") for i in range(11)},
    "skip_weights": ([8, 512], "scalar"),
    "skip_gates": ([8, 512], "scalar"),
    "parallel_post_lambdas": ([11, 2, 2], "scalar"),
    "parallel_resid_lambdas": ([11, 2], "scalar"),
    "smear_gate.weight": ([1, 12], "scalar"),
    "smear_lambda": ([1], "scalar"),
}


# ---------------------------------------------------------------- shape and count
def test_frontier_preset_has_the_records_tensors_and_count():
    cfg = load_config("frontier", environ={})
    with torch.device("meta"):
        model = GPT(cfg.model)
    assert count_params(model) == 35_945_671  # LOG42:132
    assert group_sizes(model) == {"embed": 4_194_304, "head": 0, "matrix": 31_719_424, "scalar": 31_943}
    banked = record_table(tensor_table(model))
    assert {r["name"]: (r["shape"], r["group"]) for r in banked} == F2_11
    assert len(banked) == 66
    assert not list(model.buffers())  # the record has no persistent buffers either


def test_seed_presets_keep_every_frontier_option_off():
    for preset in ("record", "tiny"):
        m = load_config(preset, environ={}).model
        assert (m.num_loops, m.parallel_start_layer, m.doc_attention, m.fused_ce) == (0, 0, False, False)
        assert not (m.skip_gates_enabled or m.smear_gate_enabled or m.sparse_attn_gate_enabled)
        assert not (m.gated_attn_enabled or m.attn_out_gate_enabled) and m.rope_table == "seed"
        assert m.seed_smear and m.rope_yarn and m.init_order == "seed" and m.rope_positions == "auto"
        o = load_config(preset, environ={}).optim
        assert (o.muon_ns_coeffs, o.muon_row_normalize, o.muon_momentum_dtype) == ("seed", False, "float32")
        t = load_config(preset, environ={}).train
        assert (t.warmdown_frac, t.min_lr, t.gptq_reserve_seconds) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------- recurrence
def test_virtual_layer_order_and_skip_pairing_match_F2_6():
    assert virtual_layers(11, 2, 3, 5) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert layer_schedule(11, 2, 3, 5, looping=False) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    enc, dec = layer_schedule(11, 2, 3, 5, looping=True)
    assert (enc, dec) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])  # LOG42:143, 161
    assert num_skip_rows(11, 2, 3, 5) == 8 and num_skip_rows(11, 0, 3, 5) == 5
    on = [(dec[k], None if s is None else (enc[s], s)) for k, s in enumerate(skip_sources(8, 9, 8))]
    assert on == [(5, (4, 7)), (3, (3, 6)), (4, (5, 5)), (5, (4, 4)), (6, (3, 3)), (7, (2, 2)), (8, (1, 1)),
                  (9, (0, 0)), (10, None)]  # fmt: skip
    off = [(d, None if s is None else s) for d, s in zip([5, 6, 7, 8, 9, 10], skip_sources(5, 6, 8))]
    assert off == [(5, 4), (6, 3), (7, 2), (8, 1), (9, 0), (10, None)]
    assert (META["encoder_indices"], META["decoder_indices"]) == layer_schedule(6, 2, 1, 2, looping=True)


# ---------------------------------------------------------------- against the record's own code
def test_same_seed_gives_the_records_initial_weights():
    # The record's bits on this CPU vendor (MKL's QR inside orthogonal_ differs by vendor: tests/_cpu.py).
    vendor = cpu_vendor()
    digests = {META["init_cpu_vendor"]: {k: v["sha256"] for k, v in META["init"].items()}}
    digests |= META.get("init_sha256_by_cpu", {})
    if vendor not in digests:
        pytest.skip(f"no record digests made on a {vendor} CPU: gen_frontier_model.py --init-only adds them")
    with one_thread():
        model = build_model(fixture_config().model, seed=META["seed"])
    got = to_record_state_dict(model.state_dict(), META["env"]["NUM_LAYERS"])
    assert set(got) == set(META["init"])
    for name, want in META["init"].items():
        assert str(got[name].dtype) == want["dtype"] and list(got[name].shape) == want["shape"], name
        assert sha(got[name]) == digests[vendor][name], name
    assert model.parallel_resid_lambdas[0, 0].item() == 1.1015625  # bf16-rounded 1.1


@pytest.mark.parametrize("looping", [False, True])
def test_logits_equal_the_records_forward(fx, looping):
    model = fixture_model(fx)
    model.set_looping(looping)
    with torch.no_grad():
        got = model.compute_logits(model.forward_hidden(fx["ids"][None]))[0]
    want = fx[f"logits_loop_{'on' if looping else 'off'}"]
    assert (got - want).abs().max().item() < 1e-4
    assert (want - fx["logits_loop_off" if looping else "logits_loop_on"]).abs().max() > 1e-2  # looping matters


def test_cu_seqlens_from_ids_equal_the_records(fx):
    flags = torch.zeros(1, len(fx["ids"]), dtype=torch.bool)
    from pgolf.data.documents import segment_flags

    flags = segment_flags(fx["ids"][None], max_doc_len=META["max_doc_len"])
    cu, longest = da.packed_cu_seqlens(flags)
    assert torch.equal(cu, fx["cu_seqlens"]) and longest == META["max_seqlen"]


def test_record_state_dict_round_trip_and_bad_bank(fx):
    w = {k[2:]: v for k, v in fx.items() if k.startswith("w.")}
    ours = from_record_state_dict(w, 6)
    assert "blocks.5.attn.c_v.weight" in ours and "kv_bank" not in ours
    assert torch.equal(ours["blocks.5.attn.c_v.weight"], w["kv_bank"][11])  # kv_bank[n+i] is V
    assert torch.equal(ours["blocks.2.attn.proj.weight"], w["qo_bank"][8])  # qo_bank[n+i] is the out-projection
    back = to_record_state_dict(ours, 6)
    assert back.keys() == w.keys() and all(torch.equal(back[k], w[k]) for k in w)
    assert "parallel_post_lambdas" not in from_record_state_dict(w, 6, lanes=False)
    with pytest.raises(ArtifactError, match="qo_bank"):
        from_record_state_dict({**w, "qo_bank": w["qo_bank"][:5]}, 6)


# ---------------------------------------------------------------- components (FRONTIER checks)
def test_smear_gate_bos_fix_check_of_F2_2():
    e = torch.randn(1, 3, 16)
    ids = torch.tensor([[5, 1, 7]])
    w, lam = torch.zeros(1, 12), torch.ones(1)  # g = 0.5
    x = input_smear(e, ids, w, lam, bos_fix=True)
    assert torch.equal(x[0, 0], e[0, 0]) and torch.equal(x[0, 1], e[0, 1])  # position 1 is BOS: unchanged
    assert torch.allclose(x[0, 2], e[0, 2] + 0.5 * e[0, 1])
    leak = input_smear(e, ids, w, lam, bos_fix=False)  # #2135's SMEAR_GATE_BOS_FIX=0
    assert torch.allclose(leak[0, 1], e[0, 1] + 0.5 * e[0, 0])


def test_identity_at_init_and_gates_at_init():
    """F2.12: zero out-projections and resid_mix = [1, 0] make every block the identity at step 0."""
    model = build_model(fixture_config("model.embed_dtype=float32").model, seed=0).eval()
    ids = torch.randint(2, 96, (2, 40))
    x0 = model.embed(ids)
    h = model.forward_hidden(ids)
    assert torch.allclose(h, F.rms_norm(x0, (x0.size(-1),)), atol=1e-5)  # lane mean is a multiple of x0
    s = torch.randn(2, 5, 32)
    x = torch.randn(2, 5, 32)
    assert torch.allclose(skip_merge(x, s, torch.ones(32), torch.zeros(32)), 0.5 * x + 0.5 * s)  # F2.7
    y = torch.randn(2, 5, 2, 16)
    from pgolf.model.gates import head_gate

    g = head_gate("sparse", torch.randn(2, 5, 32), torch.zeros(2, 12), scale=0.5, window=12)
    assert torch.equal(g, torch.full_like(g, 0.5)) and torch.equal(y * g[..., None], y / 2)
    loss = model(ids, torch.randint(0, 96, (2, 40)))
    assert loss.item() == pytest.approx(math.log(96), abs=0.1)


def test_fused_ce_identity_and_training_loss():
    x = torch.randn(1000, dtype=torch.float64) * 40
    assert torch.allclose(30 * torch.tanh(x / 30), 60 * torch.sigmoid(x / 15) - 30, atol=1e-12)  # F2.9
    assert 30 * math.tanh(10 / 30) == pytest.approx(9.6454, abs=1e-4)
    cfg = fixture_config("model.embed_dtype=float32")
    model = build_model(cfg.model, seed=0)
    with torch.no_grad():
        model.tok_emb.weight.mul_(400)  # logits large enough for the cap to bite
    ids, tg = torch.randint(2, 96, (2, 24)), torch.randint(0, 96, (2, 24))
    fused = model(ids, tg)
    model.config.fused_ce = False
    plain = model(ids, tg)
    assert fused.item() == pytest.approx(plain.item(), abs=1e-5)  # the same in fp32; only bf16 rounding differs


def test_attention_gates_are_mutually_exclusive_and_configs_refused():
    with pytest.raises(ConfigError, match="mutually exclusive"):
        load_config("frontier", ["model.gated_attn_enabled=true"], environ={})
    with pytest.raises(ConfigError, match="parallel_start_layer"):
        load_config("frontier", ["model.parallel_start_layer=4"], environ={})  # decoder returns to layer 3
    with pytest.raises(ConfigError, match="muon_backend_steps"):
        load_config("frontier", ["optim.muon_backend_steps=7"], environ={})  # the record silently runs 5
    with pytest.raises(ConfigError, match="loop_end"):
        load_config("frontier", ["model.loop_end=11"], environ={})
    with pytest.raises(ConfigError, match="rope_positions"):
        load_config("record", ["model.rope_positions=document"], environ={})
    cfg = load_config("record", environ={"NUM_LOOPS": "1", "SMEAR_GATE_ENABLED": "1", "MUON_ROW_NORMALIZE": "1"})
    assert cfg.model.num_loops == 1 and cfg.model.smear_gate_enabled and cfg.optim.muon_row_normalize


@pytest.mark.parametrize("gate", ["sparse_attn_gate_enabled", "gated_attn_enabled", "attn_out_gate_enabled"])
def test_every_attention_gate_acts_and_is_a_scalar_parameter(gate):
    sets = [f"model.{g}={'true' if g == gate else 'false'}" for g in ("sparse_attn_gate_enabled", gate)]
    small = ["model.num_layers=2", "model.xsa_last_n=2", "model.parallel_start_layer=0", "model.num_loops=0"]
    cfg = load_config("frontier-tiny", [*sets, *small], environ={})
    model = build_model(cfg.model, seed=0).eval()
    name = "attn_gate_proj.weight" if gate == "attn_out_gate_enabled" else "attn_gate_w"
    p = dict(model.named_parameters())[f"blocks.0.attn.{name}"]
    assert any(p is q for q in route_parameters(model).scalar)
    with torch.no_grad():
        for q in model.parameters():
            q.add_(0.05 * torch.randn_like(q))
        ids = torch.randint(2, 1024, (1, 16))
        before = model.forward_hidden(ids)
        p.add_(1.0)
        assert (model.forward_hidden(ids) - before).abs().max() > 1e-4


def test_bigram_ve_and_vrl_can_be_removed_from_the_seed_and_exported(tmp_path):
    from pgolf.quant.artifact import export_run, load_artifact, write_run

    sets = ["model.bigram_vocab_size=0", "model.ve_enabled=false", "model.vrl_enabled=false", "model.num_layers=2",
            "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1", "model.xsa_last_n=2"]  # fmt: skip
    cfg = load_config("record", sets, environ={})
    model = build_model(cfg.model, seed=0)
    names = set(model.state_dict())
    assert not any(n.startswith(("bigram", "ve_")) or "vrl_gate" in n for n in names)
    write_run(tmp_path / "run", cfg, model.state_dict())
    rep = export_run(tmp_path / "run", tmp_path / "a.pgolf")
    assert set(load_artifact(rep["path"]).state_dict()) == names


def test_frontier_small_model_exports_and_loads_with_the_loops_on(fx, tmp_path):
    from pgolf.quant.artifact import export_run, load_artifact, write_run

    cfg = fixture_config()
    model = fixture_model(fx)
    write_run(tmp_path / "run", cfg, {k: v.to(torch.bfloat16) if k == "tok_emb.weight" else v
                                      for k, v in model.state_dict().items()})  # fmt: skip
    rep = export_run(tmp_path / "run", tmp_path / "a.pgolf")
    loaded = load_artifact(rep["path"])
    assert loaded.looping  # evaluation runs the loops, as every model after the record's training
    with torch.no_grad():
        model.set_looping(True)
        ids = fx["ids"][None]
        a = model.compute_logits(model.forward_hidden(ids))
        b = loaded.compute_logits(loaded.forward_hidden(ids))
    assert (a - b).abs().max() < 0.5  # int6/int8 rounding only


# ---------------------------------------------------------------- document-bounded attention
def doc_model(*sets: str):
    cfg = fixture_config("model.embed_dtype=float32", *sets)
    model = build_model(cfg.model, seed=0).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g) / max(1, p.size(-1)) ** 0.5)
    return model


@pytest.mark.parametrize("positions", ["row", "document"])
@pytest.mark.parametrize("looping", [False, True])
def test_no_information_crosses_a_bos(positions, looping):
    model = doc_model(f"model.rope_positions={positions}")
    model.set_looping(looping)
    ids = torch.randint(2, 96, (2, 64), generator=torch.Generator().manual_seed(1))
    ids[0, [10, 30, 50]] = 1
    ids[1, [5, 40]] = 1
    other = ids.clone()
    other[0, 31:50] = (other[0, 31:50] + 17) % 94 + 2  # the third document of row 0, BOS kept
    other[1, :5] = (other[1, :5] + 5) % 94 + 2  # the partial document before row 1's first BOS
    with torch.no_grad():
        a, b = model.forward_hidden(ids), model.forward_hidden(other)
    same = torch.ones(2, 64, dtype=torch.bool)
    same[0, 31:50] = False
    same[1, :5] = False
    assert torch.equal(a[same], b[same])  # exactly: 0.0 difference
    assert (a[~same] - b[~same]).abs().max() > 1e-3


def test_document_attention_equals_each_document_alone():
    model = doc_model("model.rope_positions=document", "model.doc_max_len=0")
    ids = torch.randint(2, 96, (1, 60), generator=torch.Generator().manual_seed(2))
    starts = [0, 12, 33, 47]
    ids[0, starts[1:]] = 1
    with torch.no_grad():
        packed = model.forward_hidden(ids)[0]
        alone = torch.cat([model.forward_hidden(ids[:, s:e])[0] for s, e in zip(starts, [*starts[1:], 60])])
    assert (packed - alone).abs().max() < 1e-5


def test_long_documents_are_cut_every_doc_max_len_tokens():
    ids = torch.randint(2, 96, (1, 48), generator=torch.Generator().manual_seed(4))
    ids[0, 4] = 1  # one document from 4 to 48, cut at 20 and 36 (16 tokens from its start)
    other = ids.clone()
    other[0, 5:19] = (other[0, 5:19] + 11) % 94 + 2  # inside the first piece (19 feeds the smear at 20)
    for cut, crosses in ((16, False), (0, True)):
        model = doc_model(f"model.doc_max_len={cut}")
        with torch.no_grad():
            a, b = model.forward_hidden(ids)[0], model.forward_hidden(other)[0]
        assert torch.equal(a[:5], b[:5])
        assert torch.equal(a[20:], b[20:]) != crosses


def test_every_kernel_computes_the_same_masked_attention(monkeypatch):
    torch.manual_seed(0)
    ids = torch.randint(2, 96, (2, 40))
    ids[0, [7, 20]] = 1
    ids[1, 30] = 1
    q, k, v = torch.randn(2, 40, 4, 16), torch.randn(2, 40, 2, 16), torch.randn(2, 40, 2, 16)
    ref = da.document_attention(q, k, v, da.segments_for(ids, "sdpa", max_doc_len=16))
    # naive: per segment, causal softmax over its own keys
    seg = da.segments_for(ids, "sdpa", max_doc_len=16).ids
    naive = torch.zeros_like(q)
    for b in range(2):
        for s in seg[b].unique():
            idx = (seg[b] == s).nonzero().flatten()
            qs, ks, vs = q[b, idx].transpose(0, 1), k[b, idx].repeat_interleave(2, 1), v[b, idx].repeat_interleave(2, 1)
            att = (qs @ ks.transpose(0, 1).transpose(1, 2)) / 4.0
            att = att.masked_fill(torch.ones(len(idx), len(idx), dtype=torch.bool).triu(1), float("-inf"))
            naive[b, idx] = (att.softmax(-1) @ vs.transpose(0, 1)).transpose(0, 1)
    assert (ref - naive).abs().max() < 1e-5
    with warnings.catch_warnings():  # flex attention runs eagerly (unfused) here: it says so
        warnings.simplefilter("ignore")
        flex = da.document_attention(q, k, v, da.segments_for(ids, "flex", max_doc_len=16))  # forward only on CPU
    assert (flex - ref).abs().max() < 1e-5
    # the CPU default: segments gathered into a padded batch, and its gradients equal the mask path's
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    padded = da.document_attention(qg, kg, vg, da.segments_for(ids, "padded", max_doc_len=16))
    assert (padded - ref).abs().max() < 1e-5
    qm, km, vm = (t.clone().requires_grad_(True) for t in (q, k, v))
    da.document_attention(qm, km, vm, da.segments_for(ids, "sdpa", max_doc_len=16)).square().sum().backward()
    padded.square().sum().backward()
    for a, b in ((qg, qm), (kg, km), (vg, vm)):
        assert (a.grad - b.grad).abs().max() < 1e-4
    assert da.resolve_kernel("auto", torch.device("cpu")) == "padded"
    assert da.resolve_kernel("sdpa-mask", torch.device("cpu")) == "sdpa"

    # FA3's varlen call over the flattened batch, given an exact per-segment stand-in for the kernel
    def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal):
        assert causal and torch.equal(cu_seqlens_q, cu_seqlens_k) and max_seqlen_q == 16
        out = torch.zeros_like(q)
        cu = cu_seqlens_q.tolist()
        for s, e in zip(cu[:-1], cu[1:]):
            if e > s:
                qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))
                y = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
                out[s:e] = y.transpose(0, 1)
        return out

    monkeypatch.setattr(da, "flash_attn_varlen", lambda: varlen)
    seg3 = da.segments_for(ids, "fa3", max_doc_len=16)
    fa3 = da.document_attention(q, k, v, seg3)
    assert (fa3 - ref).abs().max() < 1e-5
    assert seg3.cu_seqlens.numel() % 64 == 0 and seg3.cu_seqlens[:7].tolist() == [0, 7, 20, 36, 40, 56, 70]


def test_model_flops_count_every_virtual_pass():
    from pgolf.model.flops import training_flops_per_token

    m = load_config("frontier-tiny", environ={}).model
    per_block = 192 * 192 * 2 + 2 * 192 * 96 + 2 * 192 * 768  # q, out, k, v, up, down
    for looping, passes in ((False, 6), (True, 10)):  # 10 = [0,1] + [2,3] x 3 + [4,5]
        fwd = 2 * (passes * per_block + 192 * 8192) + passes * 2 * 2 * 192 * 257 / 2  # the SP8192 head
        assert training_flops_per_token(m, 256, looping=looping) == 3 * fwd
    assert training_flops_per_token(load_config("tiny", environ={}).model, 256) == 15_010_560  # unchanged
