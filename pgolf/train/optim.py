"""The seed's parameter routing: AdamW for embedding tables, Muon for block matrices
(and the small projections), AdamW for scalars/control tensors, Adam for an untied head."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from pgolf.config import OptimConfig
from pgolf.train.muon import Muon, orthogonalizer


def is_control(name: str, patterns: tuple[str, ...]) -> bool:
    return any(p in name for p in patterns)


@dataclass
class ParamGroups:
    embed: list[nn.Parameter]
    head: list[nn.Parameter]
    matrix: list[nn.Parameter]
    scalar: list[nn.Parameter]


def is_block_scalar(name: str, p: nn.Parameter, patterns: tuple[str, ...]) -> bool:
    """Vectors, control tensors, and the attention output gates (2-D, but never matrices for Muon:
    the record names them to match its control patterns; pgolf routes them so whatever the patterns)."""
    return p.ndim < 2 or is_control(name, patterns) or "attn_gate" in name


def route_parameters(model) -> ParamGroups:
    """Assign every parameter to exactly one group, in the seed's order (SPEC §5.1), then the
    frontier's model-level tensors in the record's order (FRONTIER F3.1)."""
    patterns = model.config.control_patterns
    block_params = list(model.blocks.named_parameters())
    matrix = [p for n, p in block_params if p.ndim == 2 and not is_block_scalar(n, p, patterns)]
    matrix += [p for p in model.mtp_heads.parameters() if p.ndim == 2]
    scalar = [p for n, p in block_params if is_block_scalar(n, p, patterns)]
    if model.skip_weights.numel() > 0:
        scalar.append(model.skip_weights)
    extra = (model.skip_gates, model.parallel_post_lambdas, model.parallel_resid_lambdas, model.smear_lambda)
    if model.smear_gate is not None:
        extra = (*extra[:3], model.smear_gate.weight, *extra[3:])
    scalar.extend(p for p in extra if p is not None)
    if model.smear is not None:
        scalar.append(model.smear.gate)
    embed = [model.tok_emb.weight]
    if model.bigram is not None:
        scalar.append(model.bigram.scale)
        embed.append(model.bigram.embed.weight)
        if model.bigram.proj is not None:
            matrix.append(model.bigram.proj.weight)
    if model.ve_shared is not None:
        embed.append(model.ve_shared.embed.weight)
        if model.ve_shared.proj is not None:
            matrix.append(model.ve_shared.proj.weight)
        scalar.append(model.ve_shared.scale)
        scalar.extend(model.ve_layer_scales)
    head = [model.lm_head.weight] if model.lm_head is not None else []
    groups = ParamGroups(embed, head, matrix, scalar)
    _check_partition(model, groups)
    return groups


def _check_partition(model, g: ParamGroups) -> None:
    seen: dict[int, int] = {}
    for p in g.embed + g.head + g.matrix + g.scalar:
        seen[id(p)] = seen.get(id(p), 0) + 1
    for name, p in model.named_parameters():
        if seen.get(id(p), 0) != 1:
            raise RuntimeError(f"parameter {name} is in {seen.get(id(p), 0)} optimiser groups (must be exactly 1)")


@functools.lru_cache(maxsize=8)
def fused_adam_available(device: torch.device) -> bool:
    """Fused Adam(W) where this PyTorch has it for the device type (CUDA; CPU since 2.4).

    The seed asks for fused AdamW; on a CPU the fused and the for-loop kernels round
    differently (one ulp per step), so pgolf uses the fused one wherever it exists.
    """
    try:
        torch.optim.AdamW([torch.zeros(1, device=torch.device(device.type), requires_grad=True)], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def build_optimizers(model, cfg: OptimConfig, device: torch.device, orthogonalize=None) -> list[torch.optim.Optimizer]:
    """[embedding AdamW, (head Adam), Muon, scalar AdamW]; each group carries `base_lr`."""
    g = route_parameters(model)
    fused = fused_adam_available(device)
    emb_lr = cfg.tied_embed_lr if model.config.tie_embeddings else cfg.embed_lr
    opts: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(
            [{"params": [p], "lr": emb_lr, "base_lr": emb_lr} for p in g.embed],
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.adam_eps,
            weight_decay=cfg.embed_wd if cfg.embed_wd >= 0 else cfg.adam_wd,
            fused=fused,
        )
    ]
    if g.head:
        opts.append(
            torch.optim.Adam(
                [{"params": g.head, "lr": cfg.head_lr, "base_lr": cfg.head_lr}],
                betas=(cfg.beta1, cfg.beta2),
                eps=cfg.adam_eps,
                fused=fused,
            )
        )
    ns_dtype = cfg.muon_dtype if cfg.muon_dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    muon = Muon(
        g.matrix,
        lr=cfg.matrix_lr,
        momentum=cfg.muon_momentum,
        backend_steps=cfg.muon_backend_steps,
        weight_decay=cfg.muon_wd,
        orthogonalize=orthogonalize or orthogonalizer(cfg),
        dtype=getattr(torch, ns_dtype),
        row_normalize=cfg.muon_row_normalize,
        momentum_dtype=getattr(torch, cfg.muon_momentum_dtype),
    )
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    opts.append(muon)
    opts.append(
        torch.optim.AdamW(
            [{"params": g.scalar, "lr": cfg.scalar_lr, "base_lr": cfg.scalar_lr}],
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.adam_eps,
            weight_decay=cfg.adam_wd,
            fused=fused,
        )
    )
    return opts


def group_sizes(model) -> dict[str, int]:
    g = route_parameters(model)
    return {k: sum(p.numel() for p in getattr(g, k)) for k in ("embed", "head", "matrix", "scalar")}
