"""The one typed configuration of pgolf.

Precedence, lowest first: the dataclass defaults (the seed's values), a TOML
preset, the challenge's environment variables (``NUM_LAYERS=9`` ...), then
``--set section.field=value`` on the command line. Everything is read here, once;
the rest of the code receives a `Config` and never looks at the environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from pgolf.errors import ConfigError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"

SEED_CONTROL_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain",
    "skip_weight", "skip_weights", "smear", "dtg_gate", "ve_layer_scales", "ve_shared.scale",
)  # fmt: skip
# PR #1855's CONTROL_TENSOR_NAME_PATTERNS (FRONTIER F3.10): the frontier presets use it.
FRONTIER_CONTROL_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain",
    "skip_weight", "skip_weights", "skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas",
    "attn_gate_proj", "attn_gate_w", "smear_gate", "smear_lambda",
)  # fmt: skip
ATTN_GATES = ("sparse_attn_gate_enabled", "gated_attn_enabled", "attn_out_gate_enabled")
# optim.muon_ns_coeffs -> its number of (a, b, c) tuples (pgolf.train.muon.NS_TABLES; 1 = repeated every step)
NS_TUPLES = {"seed": 1, "polar_express": 5}
# eval.run_methods' choices: pgolf.eval's methods (tests/test_pipeline.py checks the two lists agree)
RUN_METHOD_NAMES = ("plain", "sliding", "slot", "slot-causal", "ttt", "ttt-lora", "ttt-phased", "ngram-tilt")


def _f(
    default: Any,
    env: str | None = None,
    help: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple | None = None,
    allow_inf: bool = False,
) -> Any:
    """A dataclass field carrying its challenge environment-variable name and its valid range.

    `validate_ranges` checks every field against ge/gt/le/lt/choices; floats are also refused
    when NaN, and when infinite unless allow_inf (an infinite budget means "no cap").
    """
    meta = {"env": env, "help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    meta["allow_inf"] = allow_inf
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda d=default: d, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    vocab_size: int = _f(1024, "VOCAB_SIZE", "must equal the tokenizer's vocabulary", ge=2, le=65536)
    num_layers: int = _f(11, "NUM_LAYERS", ge=1, le=128)
    model_dim: int = _f(512, "MODEL_DIM", ge=2, le=4096)
    num_heads: int = _f(8, "NUM_HEADS", ge=1, le=128)
    num_kv_heads: int = _f(4, "NUM_KV_HEADS", "must divide num_heads (GQA)", ge=1, le=128)
    mlp_mult: float = _f(3.0, "MLP_MULT", "MLP hidden = int(mlp_mult * model_dim)", gt=0, le=16)
    tie_embeddings: bool = _f(True, "TIE_EMBEDDINGS")
    tied_embed_init_std: float = _f(0.005, "TIED_EMBED_INIT_STD", ge=0, le=10)
    rope_base: float = _f(10000.0, "ROPE_BASE", gt=0, le=1e12)
    rope_dims: int = _f(16, "ROPE_DIMS", "rotated channels per head, 0 = all", ge=0, le=1024)
    rope_ref_len: int = _f(
        1024, "ROPE_TRAIN_SEQ_LEN", "NTK base rescaling applies above this length (seed: 1024)", ge=1, le=1 << 20
    )
    logit_softcap: float = _f(30.0, "LOGIT_SOFTCAP", gt=0, le=1e4)
    qk_gain_init: float = _f(4.0, "QK_GAIN_INIT", ge=0, le=1e3)
    bigram_vocab_size: int = _f(1024, "BIGRAM_VOCAB_SIZE", "0 disables BigramHash", ge=0, le=1 << 20)
    bigram_dim: int = _f(128, "BIGRAM_DIM", ge=0, le=4096)
    xsa_last_n: int = _f(11, "XSA_LAST_N", "XSA on the last N layers", ge=0, le=128)
    ln_scale: bool = _f(True, "LN_SCALE", "1/sqrt(layer+1) scaling of block inputs")
    dtg_enabled: bool = _f(False, "DTG_ENABLED")
    ve_enabled: bool = _f(True, "VE_ENABLED")
    ve_dim: int = _f(128, "VE_DIM", ge=0, le=4096)
    ve_layers: tuple[int, ...] = _f((9, 10), "VE_LAYERS", ge=0, lt=128)
    vrl_enabled: bool = _f(True, "VRL_ENABLED")
    mtp_num_heads: int = _f(0, "MTP_NUM_HEADS", ge=0, le=16)
    mtp_loss_weight: float = _f(0.2, "MTP_LOSS_WEIGHT", ge=0, le=100)
    embed_dtype: str = _f(
        "bfloat16", None, "storage dtype of the embedding tables (seed: bfloat16)", choices=("float32", "bfloat16")
    )
    control_patterns: tuple[str, ...] = _f(SEED_CONTROL_PATTERNS, "CONTROL_TENSOR_NAME_PATTERNS")
    # -- seed numerics (issue 17)
    rope_table: str = _f(
        "seed",
        None,
        "seed: bf16 inv_freq and positions for T <= rope_ref_len, fp32 NTK above (the seed) | fp32 "
        "| frontier: bf16-rounded inv_freq, fp32 positions and tables (#1855)",
        choices=("seed", "fp32", "frontier"),
    )
    # ---- the frontier record's network (PR #1855, FRONTIER F2); every option is off in the seed's presets
    rope_yarn: bool = _f(True, "ROPE_YARN", "NTK base rescaling above rope_ref_len (the seed); #1855 runs without")
    seed_smear: bool = _f(True, None, "the seed's per-channel SmearGate after the input norm")
    smear_gate_enabled: bool = _f(False, "SMEAR_GATE_ENABLED", "input-dependent SmearGate on the raw embedding (F2.2)")
    smear_gate_bos_fix: bool = _f(True, "SMEAR_GATE_BOS_FIX", "never smear into a BOS (0 = #2135's leak)")
    gate_window: int = _f(12, "GATE_WINDOW", "leading channels read by the smear and attention gates", ge=1, le=4096)
    sparse_attn_gate_enabled: bool = _f(False, "SPARSE_ATTN_GATE_ENABLED", "per-head output gate from 12 channels")
    sparse_attn_gate_scale: float = _f(1.0, "SPARSE_ATTN_GATE_SCALE", ge=0, le=1e3)
    sparse_attn_gate_init_std: float = _f(0.0, "SPARSE_ATTN_GATE_INIT_STD", ge=0, le=10)
    gated_attn_enabled: bool = _f(False, "GATED_ATTN_ENABLED", "dense per-head output gate from all channels")
    gated_attn_init_std: float = _f(0.01, "GATED_ATTN_INIT_STD", ge=0, le=10)
    attn_out_gate_enabled: bool = _f(False, "ATTN_OUT_GATE_ENABLED", "2*sigmoid per-head gate (#1667)")
    attn_out_gate_src: str = _f(
        "proj", "ATTN_OUT_GATE_SRC", "proj (block input) | q (raw q projection)", choices=("proj", "q")
    )
    num_loops: int = _f(
        0, "NUM_LOOPS", "depth recurrence: extra passes over layers loop_start..loop_end (0 = off)", ge=0, le=16
    )
    loop_start: int = _f(3, "LOOP_START", ge=0, lt=128)
    loop_end: int = _f(5, "LOOP_END", "inclusive", ge=0, lt=128)
    enable_looping_at: float = _f(
        0.35, "ENABLE_LOOPING_AT", "training fraction at which the loops switch on", ge=0, le=1
    )
    skip_gates_enabled: bool = _f(False, "SKIP_GATES_ENABLED", "sigmoid-gated U-Net skips: lerp(w*s, x, sigmoid(g))")
    parallel_start_layer: int = _f(
        0, "PARALLEL_START_LAYER", "two residual lanes from this decoder layer (0 = off)", ge=0, lt=128
    )
    parallel_final_lane: str = _f("mean", "PARALLEL_FINAL_LANE", "mean | attn | mlp", choices=("mean", "attn", "mlp"))
    doc_attention: bool = _f(False, None, "no position attends across a BOS (document-bounded causal attention)")
    doc_max_len: int = _f(
        0, None, "document attention cuts documents every N tokens from their start (0 = never)", ge=0, le=1 << 24
    )
    rope_positions: str = _f(
        "auto",
        None,
        "row | document | auto (document with doc_attention, else row)",
        choices=("auto", "row", "document"),
    )
    fused_ce: bool = _f(False, "FUSED_CE_ENABLED", "training soft-caps the raw logits in fp32 (#1855's fused CE)")
    init_order: str = _f(
        "seed",
        None,
        "CPU RNG draw order of the init: seed (#1313) | frontier (#1855's banks)",
        choices=("seed", "frontier"),
    )

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    @property
    def xsa_layers(self) -> list[int]:
        return list(range(max(0, self.num_layers - self.xsa_last_n), self.num_layers))

    @property
    def document_positions(self) -> bool:
        """RoPE positions restart at every document (else they run along the row)."""
        return self.rope_positions == "document" or (self.rope_positions == "auto" and self.doc_attention)


@dataclass
class TrainConfig:
    seed: int = _f(1337, "SEED", ge=0, le=2**32 - 1)
    run_id: str = _f("", "RUN_ID")
    iterations: int = _f(20000, "ITERATIONS", ge=0, le=10**9)
    warmdown_iters: int = _f(3500, "WARMDOWN_ITERS", ge=0, le=10**9)
    warmup_steps: int = _f(20, "WARMUP_STEPS", "compile warm-up steps, run then undone", ge=0, le=10**6)
    train_batch_tokens: int = _f(786432, "TRAIN_BATCH_TOKENS", ge=1, le=1 << 30)
    train_seq_len: int = _f(2048, "TRAIN_SEQ_LEN", ge=1, le=1 << 20)
    grad_accum_steps: int = _f(0, "GRAD_ACCUM_STEPS", "0 = seed rule: 8 // world_size (min 1)", ge=0, le=4096)
    max_wallclock_seconds: float = _f(600.0, "MAX_WALLCLOCK_SECONDS", "<= 0 disables the cap", le=1e7)
    val_loss_every: int = _f(4000, "VAL_LOSS_EVERY", "0 = only at the end", ge=0, le=10**9)
    val_batch_size: int = _f(524288, "VAL_BATCH_SIZE", ge=1, le=1 << 32)
    val_max_tokens: int = _f(
        0,
        None,
        "periodic validation on at most the first N targets (0 = all); the last and post-EMA ones use all",
        ge=0,
        le=1 << 40,
    )
    train_log_every: int = _f(500, "TRAIN_LOG_EVERY", ge=0, le=10**9)
    ema_enabled: bool = _f(True, None)
    ema_decay: float = _f(0.997, "EMA_DECAY", gt=0, lt=1)
    swa_enabled: bool = _f(False, "SWA_ENABLED", "apply the SWA average (seed: collected, never used)")
    swa_every: int = _f(50, "SWA_EVERY", ge=1, le=10**9)
    swa_threshold: float = _f(0.2, None, "collect SWA while the LR multiplier is below this", ge=0, le=1)
    qat_enabled: bool = _f(False, "QAT_ENABLED")
    late_qat_threshold: float = _f(0.15, "LATE_QAT_THRESHOLD", "0 disables late QAT", ge=0, le=1)
    checkpoint_every: int = _f(1000, None, "steps between checkpoints (0 = none)", ge=0, le=10**9)
    keep_checkpoints: int = _f(2, None, ge=1, le=1000)
    # --- data engineer (issue 12): the training loader
    loader: str = _f(
        "stream",
        None,
        "stream: the seed's token stream | packing: FRONTIER F1.6 document packing ([1, local] rows)",
        choices=("stream", "packing"),
    )

    # ---- the frontier record's schedule (PR #1855, FRONTIER F3.5)
    warmdown_frac: float = _f(
        0.0, "WARMDOWN_FRAC", "> 0: warm down over this fraction of the budget (#1855)", ge=0, le=1
    )
    min_lr: float = _f(0.0, "MIN_LR", "floor of the LR multiplier during the warm-down", ge=0, le=1)
    gptq_reserve_seconds: float = _f(0.0, "GPTQ_RESERVE_SECONDS", "held back from the training budget", ge=0, le=1e6)
    warmup_full_steps: bool = _f(False, None, "warm-up steps ramp momentum and clip like real ones (#1855)")
    # ---- the main job (issue 16): what an idle machine of the preset's kind does in its budget
    expected_steps: int = _f(
        0, None, "steps an idle machine (expected_host) completes in max_wallclock_seconds; 0 = unknown", ge=0
    )
    expected_host: str = _f("", None, "the machine expected_steps was measured on")


@dataclass
class OptimConfig:
    embed_lr: float = _f(0.6, "EMBED_LR", ge=0)
    head_lr: float = _f(0.008, "HEAD_LR", ge=0)
    tied_embed_lr: float = _f(0.035, "TIED_EMBED_LR", ge=0)
    matrix_lr: float = _f(0.025, "MATRIX_LR", ge=0)
    scalar_lr: float = _f(0.025, "SCALAR_LR", ge=0)
    muon_momentum: float = _f(0.99, "MUON_MOMENTUM", ge=0, lt=1)
    muon_backend_steps: int = _f(5, "MUON_BACKEND_STEPS", ge=1, le=100)
    muon_dtype: str = _f(
        "auto",
        None,
        "Newton-Schulz dtype: auto (bf16 on CUDA as the seed, fp32 on CPU) | bfloat16 | float32",
        choices=("auto", "bfloat16", "float32"),
    )
    muon_momentum_warmup_start: float = _f(0.92, "MUON_MOMENTUM_WARMUP_START", ge=0, lt=1)
    muon_momentum_warmup_steps: int = _f(1500, "MUON_MOMENTUM_WARMUP_STEPS", ge=0, le=10**9)
    beta1: float = _f(0.9, "BETA1", ge=0, lt=1)
    beta2: float = _f(0.95, "BETA2", ge=0, lt=1)
    adam_eps: float = _f(1e-8, "ADAM_EPS", gt=0, le=1)
    grad_clip_norm: float = _f(0.3, "GRAD_CLIP_NORM", "<= 0 disables", le=1e9)
    muon_wd: float = _f(0.04, "MUON_WD", ge=0, le=10)
    adam_wd: float = _f(0.04, "ADAM_WD", ge=0, le=10)
    # ---- the frontier record's optimiser (PR #1855, FRONTIER F3.1-F3.3)
    embed_wd: float = _f(-1.0, "EMBED_WD", "weight decay of the embedding AdamW (< 0: adam_wd, as the seed)", le=10)
    muon_ns_coeffs: str = _f(
        "seed", None, "Newton-Schulz coefficients: seed (one quintic) | polar_express (5)", choices=tuple(NS_TUPLES)
    )
    muon_row_normalize: bool = _f(False, "MUON_ROW_NORMALIZE", "MuonEq-R: unit rows after Nesterov, before NS")
    muon_momentum_dtype: str = _f(
        "float32",
        None,
        "Muon's gradient and momentum buffer: float32 | bfloat16 (#1855)",
        choices=("float32", "bfloat16"),
    )
    muon_momentum_leak: bool = _f(False, None, "keep Muon momentum from the undone warm-up (#1855 at W>1, F4.4)")
    grad_clip_scope: str = _f(
        "global", None, "global: clip the averaged gradient | rank: each rank's own (F4.2)", choices=("global", "rank")
    )


@dataclass
class EvalConfig:
    seq_len: int = _f(2048, "EVAL_SEQ_LEN", "<= 0 means train.train_seq_len", le=1 << 20)
    stride: int = _f(96, "EVAL_STRIDE", ge=1, le=1 << 20)
    batch_seqs: int = _f(32, None, "windows (or sequences) per batch", ge=1, le=1 << 16)
    slot_enabled: bool = _f(True, "SLOT_ENABLED", "include two-pass SLOT in `pgolf run`")
    slot_steps: int = _f(24, "SLOT_STEPS", ge=0, le=10**5)
    slot_lr: float = _f(0.012, "SLOT_LR", ge=0)
    slot_lr_min: float = _f(0.001, "SLOT_LR_MIN", ge=0)
    slot_batch_seqs: int = _f(32, "SLOT_BATCH_SEQS", ge=1, le=1 << 16)
    slot_schedule: str = _f(
        "seed", None, "seed: cos(pi*i/steps), never reaches the minimum; exact: ends at it", choices=("seed", "exact")
    )
    slot_impl: str = _f(
        "scored", None, "scored: logits only where loss is taken; full: whole window (seed)", choices=("scored", "full")
    )
    causal_steps: int = _f(24, None, "causal SLOT: AdamW steps per window on its scored context", ge=0, le=10**5)
    causal_lr: float = _f(0.012, None, ge=0)
    causal_lr_min: float = _f(0.001, None, ge=0)
    causal_context: int = _f(0, None, "fit on the last K context positions only (0 = all)", ge=0, le=1 << 20)
    causal_bias: bool = _f(True, None, "also fit a per-window logit bias")
    ttt_chunk_tokens: int = _f(32768, "TTT_CHUNK_TOKENS", ge=1, le=1 << 30)
    ttt_lr: float = _f(0.002, "TTT_LR", ge=0)
    ttt_epochs: int = _f(3, "TTT_EPOCHS", ge=0, le=1000)
    ttt_momentum: float = _f(0.9, "TTT_MOMENTUM", ge=0, lt=1)
    ttt_batch_seqs: int = _f(32, "TTT_BATCH_SEQS", ge=1, le=1 << 16)
    ttt_grad_clip: float = _f(1.0, "TTT_GRAD_CLIP", le=1e9)
    ttt_freeze_blocks: int = _f(0, "TTT_FREEZE_BLOCKS", ge=0, le=128)
    # --- per-document LoRA TTT and phased global SGD (issue 15; FRONTIER F6.4-F6.6; docs/evaluation.md)
    ttt_lora_rank: int = _f(80, "TTT_LORA_RANK", "ttt-lora/ttt-phased: adapter rank", ge=1)
    ttt_lora_alpha: float = _f(144.0, "TTT_LORA_ALPHA", "adapter scale alpha / rank", gt=0)
    ttt_lora_lr: float = _f(1e-4, "TTT_LORA_LR", "AdamW learning rate of the adapters", gt=0)
    ttt_lora_beta1: float = _f(0.0, "TTT_BETA1", ge=0, lt=1)
    ttt_lora_beta2: float = _f(0.99, "TTT_BETA2", ge=0, lt=1)
    ttt_lora_eps: float = _f(1e-10, None, "AdamW eps", gt=0)
    ttt_lora_wd: float = _f(0.5, "TTT_WEIGHT_DECAY", "AdamW decoupled weight decay", ge=0)
    ttt_lora_seed: int = _f(0, None, "seed of the adapters' A (each document draws from its own generator)", ge=0)
    ttt_k_lora: bool = _f(True, "TTT_K_LORA", "adapt K (Q and V always are)")
    ttt_o_lora: bool = _f(True, "TTT_O_LORA", "adapt the attention output")
    ttt_mlp_lora: bool = _f(True, "TTT_MLP_LORA", "adapt the MLP output")
    ttt_chunk: int = _f(48, "TTT_CHUNK_SIZE", "tokens per LoRA chunk (one AdamW step each)", ge=1)
    ttt_context: int = _f(0, "TTT_EVAL_SEQ_LEN", "window of same-document context; 0 = eval.seq_len", ge=0)
    ttt_doc_batch: int = _f(64, "TTT_BATCH_SIZE", "documents per batch", ge=1)
    ttt_doc_order: str = _f(
        "length",
        None,
        "length: the record's queue (batches by length, longest first) | stream: stream order",
        choices=("length", "stream"),
    )
    ttt_phases: int = _f(3, "PHASED_TTT_NUM_PHASES", "ttt-phased: global-SGD pauses", ge=1)
    ttt_prefix_docs: int = _f(2500, "PHASED_TTT_PREFIX_DOCS", "documents scored before the last pause", ge=0)
    global_ttt_lr: float = _f(0.001, "GLOBAL_TTT_LR", "global SGD peak lr (cosine over chunks)", ge=0)
    global_ttt_momentum: float = _f(0.9, "GLOBAL_TTT_MOMENTUM", ge=0, lt=1)
    global_ttt_epochs: int = _f(1, "GLOBAL_TTT_EPOCHS", ge=0)
    global_ttt_chunk_tokens: int = _f(32768, "GLOBAL_TTT_CHUNK_TOKENS", "tokens per cosine step", ge=1)
    global_ttt_batch_seqs: int = _f(32, "GLOBAL_TTT_BATCH_SEQS", "sequences per SGD step", ge=1)
    global_ttt_grad_clip: float = _f(1.0, "GLOBAL_TTT_GRAD_CLIP", "0 = no clip", ge=0)
    global_ttt_selection: str = _f(
        "first",
        None,
        "first: the first B_k documents scored (documented) | shortest: the record's (F8.8)",
        choices=("first", "shortest"),
    )
    global_ttt_last_chunk: str = _f(
        "train",
        None,
        "train: every scored token | skip: the record's, last chunk and short sequences dropped (F8.9)",
        choices=("train", "skip"),
    )
    global_ttt_join: str = _f(
        "single",
        None,
        "single: documents joined BOS-led | record: each with its next BOS too, doubled (F8.11)",
        choices=("single", "record"),
    )
    whole_split: bool = _f(
        False, None, "score every target of the split (the frontier's rule); false: the seed's whole-window cut"
    )
    # --- issue 15: the causal token n-gram tilt (FRONTIER F6.8; docs/evaluation.md)
    ngram_tilt: str = _f("off", None, "on: tilt any method's scored logits by the n-gram hint", choices=("off", "on"))
    ngram_expert: str = _f("1514", None, "1514: orders 8..16 step 2, beta=2*conf | 2135: order 16, gate 0.8, "
                           "beta=2.625",
                           choices=("1514", "2135"))  # fmt: skip
    ngram_order: str = _f("score", None, "score: hints from scored tokens, in scoring order | stream: #2135's "
                          "precompute over the whole stream (NOT score-first)",
                          choices=("score", "stream"))  # fmt: skip
    ngram_table_bits: int = _f(22, None, "at most 2**bits contexts per context length", ge=4, le=30)
    ngram_beta: float = _f(0.0, None, "0: the expert's boost; else 1514's beta scale or 2135's fixed beta",
                           ge=0, le=20)  # fmt: skip
    # ---- the main job (issue 16)
    run_methods: tuple[str, ...] = _f(
        (), None, "methods `pgolf run` evaluates (empty: every method pgolf has)", choices=RUN_METHOD_NAMES
    )


@dataclass
class DataConfig:
    data_path: str = _f("./data/datasets/fineweb10B_sp1024", "DATA_PATH")
    tokenizer_path: str = _f("", "TOKENIZER_PATH", "empty: the data directory's tokenizer.model")
    # --- data engineer (issue 12): byte accounting and dataset checks
    caseops: str = _f(
        "auto", "CASEOPS_ENABLED", "auto: detect from the tokenizer | 1: require a CaseOps dataset | 0: refuse one"
    )
    byte_source: str = _f(
        "auto",
        None,
        "auto: the val byte sidecar if present, else byte tables | sidecar | tables",
        choices=("auto", "sidecar", "tables"),
    )
    verify: str = _f(
        "on",
        None,
        "pgolf run checks the data first (pgolf data verify): on (failure stops) | warn | off",
        choices=("on", "warn", "off"),
    )
    # --- the main job (issue 16): how `pgolf run` builds a missing builtin dataset at data_path
    builtin_caseops: bool = _f(False, None, "build the builtin corpus with CaseOps (SP tokenizer of model.vocab_size)")
    builtin_sidecar: str = _f(
        "", None, "byte sidecar of a built builtin corpus: '' | raw | normalized", choices=("", "raw", "normalized")
    )


@dataclass
class RuntimeConfig:
    device: str = _f("auto", None, "auto | cpu | cuda | cuda:N")
    compile: str = _f("auto", None, "auto (on for CUDA) | on | off", choices=("auto", "on", "off"))
    autocast: str = _f("auto", None, "auto (bf16 on CUDA) | bf16 | off", choices=("auto", "bf16", "off"))
    attention: str = _f(
        "auto",
        None,
        "auto (FlashAttention-3 if installed, else sdpa) | sdpa (the seed's: K/V heads repeated, then SDPA) "
        "| sdpa-gqa (SDPA's enable_gqa) | fa3 | flex (document attention on CUDA: flex attention) "
        "| sdpa-mask (document attention with SDPA and a full [T, T] mask, also on the CPU)",
        choices=("auto", "sdpa", "sdpa-gqa", "fa3", "flex", "sdpa-mask"),
    )
    num_threads: int = _f(0, None, "CPU threads, 0 = torch default", ge=0, le=4096)
    cpu_malloc: str = _f(
        "auto",
        None,
        "auto (keep on a CPU run) | keep (glibc keeps freed memory for reuse instead of page-faulting it back in, "
        "pgolf/cpumalloc.py) | system (glibc's defaults)",
        choices=("auto", "keep", "system"),
    )


# --------------------------------------------------------------------------- export (issue 14)
@dataclass
class QuantConfig:
    """The frontier export (FRONTIER F5; docs/artifact.md). scheme "seed" keeps the seed's export untouched."""

    scheme: str = _f(
        "seed",
        None,
        "seed: the seed's int6/int8 export (rtn or gptq) | frontier: GPTQ+SDClip, int7 embedding, LQER",
        choices=("seed", "frontier"),
    )
    matrix_bits: int = _f(6, "MATRIX_BITS", "code width of the block matrices (frontier)", ge=2, le=8)
    embed_bits: int = _f(7, "EMBED_BITS", "code width of tok_emb (frontier)", ge=2, le=8)
    matrix_clip_sigmas: float = _f(
        12.85, "MATRIX_CLIP_SIGMAS", "SDClip k of matrices neither mlp nor attn", gt=0, le=1e3
    )
    embed_clip_sigmas: float = _f(14.0, "EMBED_CLIP_SIGMAS", "SDClip k of tok_emb", gt=0, le=1e3)
    mlp_clip_sigmas: float = _f(11.5, "MLP_CLIP_SIGMAS", "SDClip k of .mlp. matrices", gt=0, le=1e3)
    attn_clip_sigmas: float = _f(13.0, "ATTN_CLIP_SIGMAS", "SDClip k of .attn. matrices", gt=0, le=1e3)
    gptq_block_size: int = _f(128, None, "GPTQ column block", ge=1, le=1 << 16)
    gptq_stable_sort: bool = _f(True, None, "stable act-order argsort (the record's is not stable, F8.19)")
    gptq_calibration_batches: int = _f(16, "GPTQ_CALIBRATION_BATCHES", "Hessian calibration batches", ge=0, le=1 << 16)
    calib_batch_tokens: int = _f(
        0, None, "tokens per calibration batch; 0 = train_batch_tokens / 8 (one record rank)", ge=0, le=1 << 30
    )
    hessian_dtype: str = _f(
        "float64",
        None,
        "Hessian accumulation: float64 | float32 (the record's, with TF32)",
        choices=("float32", "float64"),
    )
    gated_attn_quant_gate: bool = _f(True, "GATED_ATTN_QUANT_GATE", "int8 per row for attn_gate_w tensors")
    passthrough_max_numel: int = _f(65536, None, "tensors this small stay fp16", ge=0, le=1 << 30)
    lqer_enabled: bool = _f(True, "LQER_ENABLED")
    lqer_rank: int = _f(4, "LQER_RANK", ge=0, le=1024)
    lqer_top_k: int = _f(3, "LQER_TOP_K", "tensors corrected, by residual norm", ge=0, le=10**4)
    lqer_factor_bits: int = _f(4, "LQER_FACTOR_BITS", "symmetric fallback only", ge=2, le=8)
    lqer_asym_enabled: bool = _f(True, "LQER_ASYM_ENABLED")
    lqer_asym_group: int = _f(64, "LQER_ASYM_GROUP", ge=1, le=1 << 16)
    lqer_sign: str = _f(
        "svd",
        None,
        "svd: the SVD's signs (record) | best: flip pairs that lower the error (F8.20)",
        choices=("svd", "best"),
    )
    awq_lite_enabled: bool = _f(False, "AWQ_LITE_ENABLED", "AWQ-lite (PR #1945)")
    awq_lite_bits: int = _f(8, "AWQ_LITE_BITS", ge=2, le=8)
    awq_lite_group_top_k: int = _f(1, "AWQ_LITE_GROUP_TOP_K", ge=0, le=10**4)
    awq_lite_group_size: int = _f(64, "AWQ_LITE_GROUP_SIZE", ge=1, le=1 << 16)
    compressor: str = _f(
        "pergroup", "COMPRESSOR", "frontier container: pergroup | brotli | lzma", choices=("pergroup", "brotli", "lzma")
    )
    codecs: tuple[str, ...] = _f(
        ("lrzip", "brotli", "lzma"),
        None,
        "per-group candidates; lrzip if installed",
        choices=("lrzip", "brotli", "lzma"),
    )
    row_sort: bool = _f(True, None, "L1 nearest-neighbour row order in the sorted groups")
    lrzip_threads: int = _f(1, None, "lrzip -p: pinned, since the output depends on it (F8.5)", ge=1, le=64)
    compress_workers: int = _f(0, None, "parallel group compressions; 0 = one per CPU", ge=0, le=1024)


SECTIONS = ("model", "train", "optim", "eval", "data", "runtime", "quant")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    preset: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset}
        for s in SECTIONS:
            out[s] = {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(getattr(self, s)).items()
            }
        out["overrides"] = dict(self.overrides)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        cfg = cls(preset=str(d.get("preset", "")), overrides=dict(d.get("overrides", {})))
        for s in SECTIONS:
            for k, v in (d.get(s) or {}).items():
                _assign(cfg, f"{s}.{k}", v, source="config")
        validate(cfg)
        return cfg

    @property
    def eval_seq_len(self) -> int:
        return self.eval.seq_len if self.eval.seq_len > 0 else self.train.train_seq_len


# --------------------------------------------------------------------------- field tables
def _section_fields(section: str) -> dict[str, dataclasses.Field]:
    cls = type(getattr(Config(), section))
    return {f.name: f for f in dataclasses.fields(cls)}


def _all_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Map 'section.field' to its Field."""
    out = {}
    for s in SECTIONS:
        for name, f in _section_fields(s).items():
            out[f"{s}.{name}"] = (s, f)
    return out


def env_names() -> dict[str, str]:
    """Challenge environment-variable name -> 'section.field'."""
    return {f.metadata["env"]: key for key, (_, f) in _all_fields().items() if f.metadata.get("env")}


def resolve_key(key: str) -> str:
    """Accept 'section.field', a bare field name (if unique) or an env name."""
    fields = _all_fields()
    if key in fields:
        return key
    if key.upper() in env_names() and key.isupper():
        return env_names()[key]
    matches = [k for k in fields if k.split(".", 1)[1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"config key '{key}' is ambiguous: use one of {', '.join(matches)}")
    raise ConfigError(f"unknown config key '{key}'")


# --------------------------------------------------------------------------- parsing
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, typ: Any, value: Any) -> Any:
    origin = get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            return str(value)
        if origin is tuple:
            (inner, _ellipsis) = get_args(typ)
            items = [x for x in re.split(r"[,\s]+", value.strip()) if x] if isinstance(value, str) else list(value)
            return tuple(_coerce(key, inner, x) for x in items)
    except (TypeError, ValueError):
        pass
    tname = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{key}: cannot read {value!r} as {tname}")


def _assign(cfg: Config, key: str, value: Any, source: str) -> None:
    key = resolve_key(key)
    section, name = key.split(".", 1)
    obj = getattr(cfg, section)
    typ = get_type_hints(type(obj))[name]
    setattr(obj, name, _coerce(key, typ, value))
    if source != "config":
        cfg.overrides[key] = {"value": getattr(obj, name), "source": source}


def _load_toml(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    p = Path(name_or_path)
    if not p.suffix:
        p = PRESET_DIR / f"{name_or_path}.toml"
    if not p.is_file():
        known = ", ".join(sorted(x.stem for x in PRESET_DIR.glob("*.toml")))
        raise ConfigError(f"preset '{name_or_path}' not found (built-in presets: {known})")
    if str(p) in seen:
        raise ConfigError(f"preset {p}: 'extends' forms a cycle")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"preset {p}: invalid TOML ({e})") from None
    base = data.pop("extends", None)
    if base:
        merged = _load_toml(base, (*seen, str(p)))
        for s, vals in data.items():
            if isinstance(vals, dict):
                merged.setdefault(s, {}).update(vals)
            else:
                merged[s] = vals
        return merged
    return data


def load_config(
    preset: str = "record",
    sets: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build a validated Config: preset, then environment names, then --set items."""
    cfg = Config(preset=preset)
    data = _load_toml(preset)
    for s, vals in data.items():
        if s not in SECTIONS or not isinstance(vals, dict):
            raise ConfigError(f"preset {preset}: unknown section [{s}] (sections: {', '.join(SECTIONS)})")
        for k, v in vals.items():
            if f"{s}.{k}" not in _all_fields():
                raise ConfigError(f"preset {preset}: unknown field {s}.{k}")
            _assign(cfg, f"{s}.{k}", v, source="config")
    environ = os.environ if environ is None else environ
    for env, key in env_names().items():
        if env in environ:
            _assign(cfg, key, environ[env], source=f"env:{env}")
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        _assign(cfg, k.strip(), v.strip(), source="--set")
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- validation
def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _range_problem(value: Any, meta: Mapping[str, Any]) -> str | None:
    """Why `value` is outside its field's declared range, or None."""
    vals = value if isinstance(value, tuple) else (value,)
    for v in vals:
        if isinstance(v, float) and (math.isnan(v) or (math.isinf(v) and not meta.get("allow_inf"))):
            return f"must be a finite number, got {v}"
        if meta.get("choices") is not None and v not in meta["choices"]:
            return f"must be one of {', '.join(map(str, meta['choices']))}, got {v!r}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        for key, ok, word in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
            ("lt", lambda a, b: a < b, "<"),
        ):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                return f"must be {word} {bound}, got {v}"
    return None


def validate_ranges(cfg: Config) -> None:
    """Every field against the range its `_f` declares (NaN refused everywhere)."""
    for key, (section, f) in _all_fields().items():
        value = getattr(getattr(cfg, section), f.name)
        problem = _range_problem(value, f.metadata)
        if problem:
            raise ConfigError(f"{key} {problem}")


def validate(cfg: Config) -> None:
    """Refuse impossible configs before anything runs; every message names the field."""
    validate_ranges(cfg)
    m = cfg.model
    _need(m.num_layers >= 1, f"model.num_layers must be >= 1, got {m.num_layers}")
    _need(m.num_heads >= 1, f"model.num_heads must be >= 1, got {m.num_heads}")
    _need(m.num_kv_heads >= 1, f"model.num_kv_heads must be >= 1, got {m.num_kv_heads}")
    _need(
        m.model_dim % m.num_heads == 0,
        f"model.model_dim={m.model_dim} is not divisible by model.num_heads={m.num_heads}",
    )
    _need(m.head_dim % 2 == 0, f"model.model_dim/num_heads = {m.head_dim}: the head dim must be even for RoPE")
    _need(
        m.num_heads % m.num_kv_heads == 0,
        f"model.num_kv_heads={m.num_kv_heads} does not divide model.num_heads={m.num_heads}",
    )
    _need(
        0 <= m.rope_dims <= m.head_dim,
        f"model.rope_dims={m.rope_dims} must be between 0 and the head dim ({m.head_dim})",
    )
    _need(m.rope_dims % 2 == 0, f"model.rope_dims={m.rope_dims} must be even")
    _need(
        m.rope_dims == 0 or m.rope_dims > 2 or m.rope_dims == m.head_dim,
        f"model.rope_dims={m.rope_dims}: NTK rescaling needs more than 2 rotated channels",
    )
    _need(m.rope_ref_len >= 1, f"model.rope_ref_len must be >= 1, got {m.rope_ref_len}")
    _need(2 <= m.vocab_size <= 65536, f"model.vocab_size={m.vocab_size} must be in [2, 65536] (uint16 shards)")
    _need(m.mlp_hidden >= 1, f"model.mlp_mult={m.mlp_mult} gives an empty MLP")
    _need(m.logit_softcap > 0, f"model.logit_softcap must be > 0, got {m.logit_softcap}")
    _need(
        0 <= m.xsa_last_n <= m.num_layers, f"model.xsa_last_n={m.xsa_last_n} is out of range for {m.num_layers} layers"
    )
    _need(
        m.bigram_vocab_size == 0 or m.bigram_vocab_size >= 2,
        f"model.bigram_vocab_size={m.bigram_vocab_size} must be 0 (off) or >= 2",
    )
    _need(m.bigram_vocab_size == 0 or m.bigram_dim >= 1, f"model.bigram_dim={m.bigram_dim} must be >= 1")
    if m.ve_enabled:
        _need(m.ve_dim >= 1, f"model.ve_dim={m.ve_dim} must be >= 1")
        for layer in m.ve_layers:
            _need(
                0 <= layer < m.num_layers, f"model.ve_layers: layer {layer} is out of range for {m.num_layers} layers"
            )
        _need(len(set(m.ve_layers)) == len(m.ve_layers), "model.ve_layers lists a layer twice")
    _need(m.mtp_num_heads >= 0, f"model.mtp_num_heads must be >= 0, got {m.mtp_num_heads}")
    _need(
        m.embed_dtype in ("float32", "bfloat16"),
        f"model.embed_dtype must be float32 or bfloat16, got {m.embed_dtype!r}",
    )
    _need(
        m.rope_table in ("seed", "fp32", "frontier"),
        f"model.rope_table must be seed, fp32 or frontier, got {m.rope_table!r}",
    )
    _validate_frontier_model(m)

    t = cfg.train
    _need(t.train_seq_len >= 1, f"train.train_seq_len must be >= 1, got {t.train_seq_len}")
    _need(
        t.train_batch_tokens >= t.train_seq_len and t.train_batch_tokens % t.train_seq_len == 0,
        f"train.train_batch_tokens={t.train_batch_tokens} must be a positive multiple of "
        f"train.train_seq_len={t.train_seq_len}",
    )
    _need(t.iterations >= 0, f"train.iterations must be >= 0, got {t.iterations}")
    _need(t.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    _need(t.grad_accum_steps >= 0, f"train.grad_accum_steps must be >= 0, got {t.grad_accum_steps}")
    _need(0.0 < t.ema_decay < 1.0, f"train.ema_decay must be in (0, 1), got {t.ema_decay}")
    _need(t.swa_every >= 1, f"train.swa_every must be >= 1, got {t.swa_every}")
    _need(t.val_batch_size >= 1, f"train.val_batch_size must be >= 1, got {t.val_batch_size}")
    _need(t.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0, got {t.checkpoint_every}")
    _need(t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")

    o = cfg.optim
    _need(o.muon_backend_steps >= 1, f"optim.muon_backend_steps must be >= 1, got {o.muon_backend_steps}")
    _need(o.muon_momentum_warmup_steps >= 0, "optim.muon_momentum_warmup_steps must be >= 0")
    _need(
        o.muon_dtype in ("auto", "bfloat16", "float32"),
        f"optim.muon_dtype must be auto, bfloat16 or float32, got {o.muon_dtype!r}",
    )
    for name in ("embed_lr", "head_lr", "tied_embed_lr", "matrix_lr", "scalar_lr", "muon_wd", "adam_wd"):
        _need(getattr(o, name) >= 0, f"optim.{name} must be >= 0, got {getattr(o, name)}")
    _validate_frontier_train(cfg)

    e = cfg.eval
    S = cfg.eval_seq_len
    _need(S >= 1, f"eval.seq_len must give a positive window, got {S}")
    _need(1 <= e.stride <= S, f"eval.stride={e.stride} must be between 1 and the eval window ({S})")
    for name in ("batch_seqs", "slot_batch_seqs", "ttt_batch_seqs"):
        _need(getattr(e, name) >= 1, f"eval.{name} must be >= 1, got {getattr(e, name)}")
    _need(e.slot_steps >= 0, f"eval.slot_steps must be >= 0, got {e.slot_steps}")
    _need(e.causal_steps >= 0, f"eval.causal_steps must be >= 0, got {e.causal_steps}")
    _need(e.causal_context >= 0, f"eval.causal_context must be >= 0, got {e.causal_context}")
    _need(e.slot_schedule in ("seed", "exact"), f"eval.slot_schedule must be seed or exact, got {e.slot_schedule!r}")
    _need(e.slot_impl in ("scored", "full"), f"eval.slot_impl must be scored or full, got {e.slot_impl!r}")
    _need(e.ttt_chunk_tokens >= 1, f"eval.ttt_chunk_tokens must be >= 1, got {e.ttt_chunk_tokens}")
    _need(e.ttt_epochs >= 0, f"eval.ttt_epochs must be >= 0, got {e.ttt_epochs}")
    _need(
        0 <= e.ttt_freeze_blocks <= m.num_layers,
        f"eval.ttt_freeze_blocks={e.ttt_freeze_blocks} is out of range for {m.num_layers} layers",
    )

    r = cfg.runtime
    _need(
        re.fullmatch(r"auto|cpu|cuda(:\d+)?", r.device) is not None,
        f"runtime.device must be auto, cpu, cuda or cuda:N, got {r.device!r}",
    )
    _need(r.compile in ("auto", "on", "off"), f"runtime.compile must be auto, on or off, got {r.compile!r}")
    _need(r.autocast in ("auto", "bf16", "off"), f"runtime.autocast must be auto, bf16 or off, got {r.autocast!r}")
    _need(
        r.attention in ("auto", "sdpa", "sdpa-gqa", "fa3", "flex", "sdpa-mask"),
        f"runtime.attention must be auto, sdpa, sdpa-gqa, fa3, flex or sdpa-mask, got {r.attention!r}",
    )
    _need(r.num_threads >= 0, f"runtime.num_threads must be >= 0, got {r.num_threads}")
    _validate_data_fields(cfg)


def _validate_data_fields(cfg: Config) -> None:
    """The data engineer's fields (issue 12): loader, CaseOps, byte source, verification."""
    loader = cfg.train.loader
    _need(loader in ("stream", "packing"), f"train.loader must be stream or packing, got {loader!r}")
    d = cfg.data
    _need(
        d.caseops.strip().lower() in ("auto", "", "1", "0", "true", "false", "on", "off", "yes", "no"),
        f"data.caseops must be auto, 1 or 0 (CASEOPS_ENABLED), got {d.caseops!r}",
    )
    _need(
        d.byte_source in ("auto", "sidecar", "tables"),
        f"data.byte_source must be auto, sidecar or tables, got {d.byte_source!r}",
    )
    _need(d.verify in ("on", "warn", "off"), f"data.verify must be on, warn or off, got {d.verify!r}")

    validate_quant(cfg.quant)


def validate_quant(q: QuantConfig) -> None:
    _need(q.scheme in ("seed", "frontier"), f"quant.scheme must be seed or frontier, got {q.scheme!r}")
    for name in ("matrix_bits", "embed_bits"):
        _need(2 <= getattr(q, name) <= 8, f"quant.{name} must be in [2, 8], got {getattr(q, name)}")
    for name in ("matrix_clip_sigmas", "embed_clip_sigmas", "mlp_clip_sigmas", "attn_clip_sigmas"):
        v = getattr(q, name)
        _need(v == v and 0 < v < 1e6, f"quant.{name} must be a positive number, got {v}")
    _need(q.gptq_block_size >= 1, f"quant.gptq_block_size must be >= 1, got {q.gptq_block_size}")
    _need(q.gptq_calibration_batches >= 0, "quant.gptq_calibration_batches must be >= 0")
    _need(q.calib_batch_tokens >= 0, f"quant.calib_batch_tokens must be >= 0, got {q.calib_batch_tokens}")
    _need(
        q.hessian_dtype in ("float32", "float64"),
        f"quant.hessian_dtype must be float32 or float64, got {q.hessian_dtype!r}",
    )
    _need(q.passthrough_max_numel >= 0, "quant.passthrough_max_numel must be >= 0")
    _need(q.lqer_rank >= 0 and q.lqer_top_k >= 0, "quant.lqer_rank and quant.lqer_top_k must be >= 0")
    _need(2 <= q.lqer_factor_bits <= 8, f"quant.lqer_factor_bits must be in [2, 8], got {q.lqer_factor_bits}")
    _need(q.lqer_asym_group >= 1, f"quant.lqer_asym_group must be >= 1, got {q.lqer_asym_group}")
    _need(q.lqer_sign in ("svd", "best"), f"quant.lqer_sign must be svd or best, got {q.lqer_sign!r}")
    _need(2 <= q.awq_lite_bits <= 8, f"quant.awq_lite_bits must be in [2, 8], got {q.awq_lite_bits}")
    _need(q.awq_lite_group_top_k >= 0 and q.awq_lite_group_size >= 1, "quant.awq_lite_group_* out of range")
    _need(
        q.compressor in ("pergroup", "brotli", "lzma"),
        f"quant.compressor must be pergroup, brotli or lzma, got {q.compressor!r}",
    )
    bad = [c for c in q.codecs if c not in ("lrzip", "brotli", "lzma")]
    _need(q.codecs and not bad, f"quant.codecs: unknown codec {bad[0] if bad else ''!r} (lrzip, brotli, lzma)")
    _need(1 <= q.lrzip_threads <= 64, f"quant.lrzip_threads must be in [1, 64], got {q.lrzip_threads}")
    _need(q.compress_workers >= 0, f"quant.compress_workers must be >= 0, got {q.compress_workers}")


def _validate_frontier_model(m: ModelConfig) -> None:
    """The frontier options of the model (FRONTIER F2)."""
    _need(1 <= m.gate_window <= m.model_dim, f"model.gate_window={m.gate_window} must be in [1, model_dim]")
    on = [name for name in ATTN_GATES if getattr(m, name)]
    _need(len(on) <= 1, f"model.{' and model.'.join(on)} are mutually exclusive (one attention output gate)")
    _need(
        m.attn_out_gate_src in ("proj", "q"), f"model.attn_out_gate_src must be proj or q, got {m.attn_out_gate_src!r}"
    )
    for name in ("sparse_attn_gate_init_std", "gated_attn_init_std"):
        _need(getattr(m, name) >= 0, f"model.{name} must be >= 0, got {getattr(m, name)}")
    _need(m.num_loops >= 0, f"model.num_loops must be >= 0, got {m.num_loops}")
    if m.num_loops > 0:
        _need(
            0 <= m.loop_start <= m.loop_end < m.num_layers,
            f"model.loop_start={m.loop_start}, model.loop_end={m.loop_end}: need 0 <= start <= end < num_layers",
        )
        _need(
            0.0 <= m.enable_looping_at <= 1.0, f"model.enable_looping_at must be in [0, 1], got {m.enable_looping_at}"
        )
    _need(
        0 <= m.parallel_start_layer < m.num_layers,
        f"model.parallel_start_layer={m.parallel_start_layer} must be in [0, num_layers) (0 = off)",
    )
    _need(
        m.parallel_final_lane in ("mean", "attn", "mlp"),
        f"model.parallel_final_lane must be mean, attn or mlp, got {m.parallel_final_lane!r}",
    )
    if m.parallel_start_layer > 0:
        from pgolf.model.recurrence import layer_schedule  # imports torch: only when the lanes exist

        _need(not m.dtg_enabled, "model.dtg_enabled cannot be combined with parallel lanes (parallel_start_layer)")
        for looping in (False, True) if m.num_loops > 0 else (False,):
            _, dec = layer_schedule(m.num_layers, m.num_loops, m.loop_start, m.loop_end, looping)
            flags = [i >= m.parallel_start_layer for i in dec]
            _need(
                flags == sorted(flags),
                f"model.parallel_start_layer={m.parallel_start_layer}: decoder passes {dec} return to a layer "
                "below it after the lanes have started",
            )
    _need(m.doc_max_len >= 0, f"model.doc_max_len must be >= 0, got {m.doc_max_len}")
    _need(
        m.rope_positions in ("auto", "row", "document"),
        f"model.rope_positions must be auto, row or document, got {m.rope_positions!r}",
    )
    _need(
        m.rope_positions != "document" or m.doc_attention,
        "model.rope_positions=document needs model.doc_attention (positions restart where attention does)",
    )
    _need(m.init_order in ("seed", "frontier"), f"model.init_order must be seed or frontier, got {m.init_order!r}")


def _validate_frontier_train(cfg: Config) -> None:
    """The frontier options of the optimiser and schedule (FRONTIER F3)."""
    t, o = cfg.train, cfg.optim
    _need(0.0 <= t.warmdown_frac <= 1.0, f"train.warmdown_frac must be in [0, 1], got {t.warmdown_frac}")
    _need(0.0 <= t.min_lr <= 1.0, f"train.min_lr must be in [0, 1], got {t.min_lr}")
    _need(t.gptq_reserve_seconds >= 0, f"train.gptq_reserve_seconds must be >= 0, got {t.gptq_reserve_seconds}")
    _need(
        t.max_wallclock_seconds <= 0 or t.gptq_reserve_seconds < t.max_wallclock_seconds,
        f"train.gptq_reserve_seconds={t.gptq_reserve_seconds} leaves no training time "
        f"(train.max_wallclock_seconds={t.max_wallclock_seconds})",
    )
    _need(
        o.muon_ns_coeffs in NS_TUPLES,
        f"optim.muon_ns_coeffs must be one of {', '.join(NS_TUPLES)}, got {o.muon_ns_coeffs!r}",
    )
    n = NS_TUPLES[o.muon_ns_coeffs]
    _need(
        n == 1 or o.muon_backend_steps <= n,
        f"optim.muon_backend_steps={o.muon_backend_steps}: {o.muon_ns_coeffs} has {n} tuples "
        f"(the record silently runs {n} when asked for more)",
    )
    _need(
        o.muon_momentum_dtype in ("float32", "bfloat16"),
        f"optim.muon_momentum_dtype must be float32 or bfloat16, got {o.muon_momentum_dtype!r}",
    )
    _need(
        o.grad_clip_scope in ("global", "rank"),
        f"optim.grad_clip_scope must be global or rank, got {o.grad_clip_scope!r}",
    )


def grad_accum_for(cfg: Config, world_size: int) -> int:
    """Accumulation steps for a world size; the seed's rule 8 // W, lifted to any W."""
    t = cfg.train
    accum = t.grad_accum_steps or max(1, 8 // world_size)
    per_micro = t.train_batch_tokens // (world_size * accum)
    _need(
        t.train_batch_tokens % (world_size * accum) == 0 and per_micro % t.train_seq_len == 0 and per_micro > 0,
        f"train.train_batch_tokens={t.train_batch_tokens} cannot be split into {world_size} ranks x "
        f"{accum} accumulation steps of whole train.train_seq_len={t.train_seq_len} sequences",
    )
    return accum


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
