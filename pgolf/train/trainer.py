"""The training loop, in the seed's order of operations (SPEC §6.3).

One process or many under torchrun (DDP: NCCL on CUDA, Gloo on CPU). Rank 0 writes
RUN/config.json, RUN/metrics.jsonl, RUN/train.log (the seed's log format),
periodic checkpoints and RUN/final_model.safetensors (the EMA/SWA weights).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf import dist
from pgolf.config import Config, grad_accum_for
from pgolf.data.bpb import load_byte_source
from pgolf.data.loader import load_val_tokens
from pgolf.data.packing import build_train_loader
from pgolf.data.tokenizer import find_tokenizer
from pgolf.errors import ConfigError, DataError, NonFiniteLossError, PgolfError
from pgolf.eval.common import prepare_stream
from pgolf.eval.plain import evaluate_plain
from pgolf.model import build_model, count_params
from pgolf.model.doc_attention import batch_cu_seqlens
from pgolf.safeio import check_data_inputs_on_main, write_inputs_record
from pgolf.sysinfo import system_info
from pgolf.train import checkpoint
from pgolf.train.muon import orthogonalizer
from pgolf.train.optim import build_optimizers
from pgolf.train.schedule import Schedule, ema_update


@dataclass
class LoopState:
    """Everything besides weights and optimiser state that a resumed run needs."""

    step: int = 0
    train_ms: float = 0.0  # training time so far, validation excluded
    stop_after: int | None = None
    qat_on: bool = False
    swa_count: int = 0
    swa_sum: dict[str, torch.Tensor] | None = None
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    looping: bool = False  # depth recurrence switched on (model.enable_looping_at reached)


class RunFiles:
    """Rank 0's outputs: the seed-style log, metrics.jsonl and progress on stderr."""

    def __init__(self, out: Path, enabled: bool, show_progress: bool):
        self.out, self.enabled = out, enabled
        self.bar = None
        if enabled:
            out.mkdir(parents=True, exist_ok=True)
            self._log = open(out / "train.log", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._metrics = open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            if show_progress and sys.stderr.isatty():
                from tqdm.auto import tqdm

                self.bar = tqdm(desc="train", unit="step", leave=False, dynamic_ncols=True)
        self.postfix: dict[str, str] = {}

    def log(self, line: str, console: bool = True) -> None:
        if not self.enabled:
            return
        self._log.write(line + "\n")
        self._log.flush()
        if console:
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)

    def metric(self, **rec) -> None:
        if self.enabled:
            self._metrics.write(json.dumps(rec) + "\n")
            self._metrics.flush()

    def tick(self, step: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        """Advance the bar; the last logged loss and throughput ride along on it."""
        if self.bar is None:
            return
        if loss is not None:
            self.postfix["loss"] = f"{loss:.4f}"
        if tokens_per_s is not None:
            self.postfix["tok/s"] = f"{tokens_per_s:,.0f}"
        if self.postfix:
            self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        if self.enabled:
            if self.bar is not None:
                self.bar.close()
            self._log.close()
            self._metrics.close()


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records logged after the checkpoint so the file reads as one run."""
    if not path.exists():
        return

    def kept(rec: dict) -> bool:
        # The resumed loop re-runs the validation at the checkpoint's step itself.
        return rec.get("step", 0) < step or (rec.get("step", 0) == step and rec.get("kind") != "val")

    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and kept(json.loads(ln))]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


class Trainer:
    def __init__(
        self, cfg: Config, data_dir: str | Path, out: str | Path, resume: bool = False, show_progress: bool = True
    ):
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.out = Path(out)
        self.d = dist.init(cfg.runtime)
        self.device = self.d.device
        self.accum = grad_accum_for(cfg, self.d.world_size)
        self.resume_from = checkpoint.latest_checkpoint(self.out) if resume else None
        if resume and self.resume_from is None:
            raise ConfigError(f"{self.out}: no checkpoint to resume from")
        if self.resume_from is not None and self.d.is_main:
            # Before the log files are opened: records after the checkpoint are replayed by the resumed loop.
            _truncate_metrics(self.out / "metrics.jsonl", checkpoint.step_of(self.resume_from))
        self.files = RunFiles(self.out, self.d.is_main, show_progress)
        t = cfg.train
        # All RNGs seeded before the model is built, identically on every rank.
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(t.seed)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        vocab = cfg.model.vocab_size
        tok_path = find_tokenizer(self.data_dir, cfg.data.tokenizer_path or None)
        self.tokenizer_path = tok_path
        # The tokenizer and shards against the manifest (a swapped tokenizer gives a wrong bpb); what was read.
        self.inputs = check_data_inputs_on_main(self.data_dir, tok_path, vocab, self.d.is_main)
        # The val byte sidecar when the dataset has one (CaseOps), else the challenge's tables.
        d = cfg.data
        self.tables = load_byte_source(self.data_dir, tok_path, vocab, source=d.byte_source, caseops=d.caseops)
        seq = max(t.train_seq_len, cfg.eval_seq_len)
        val = load_val_tokens(self.data_dir, vocab)
        if len(val) < 2:
            raise DataError(f"{self.data_dir}: the validation split has {len(val)} tokens (needs at least 2 to score)")
        self.val_full = val  # the whole split, for the evaluators after training
        # A cap, not a demand: periodic validation is a monitor, so a preset's cap adapts to a small split.
        cap = min(t.val_max_tokens, len(val) - 1) if t.val_max_tokens else None
        self.val = prepare_stream(val, seq, cap)
        # The last step's and the post-EMA validation always see the whole split: a capped prefix
        # can rank two sets of weights differently from the split the evaluators score.
        self.val_final = prepare_stream(val, seq) if cap is not None else self.val
        self.batcher = build_train_loader(
            t.loader, self.data_dir, self.d.rank, self.d.world_size, vocab, t.train_seq_len
        )

        self.model = build_model(cfg.model, seed=None, device=self.device)
        self.model.set_looping(False)  # training starts without the loops (FRONTIER F2.6)
        self.attention = self.model.set_attention_backend(cfg.runtime.attention)
        self.compiled = cfg.runtime.compile == "on" or (cfg.runtime.compile == "auto" and self.device.type == "cuda")
        self.autocast = self.device.type == "cuda" and cfg.runtime.autocast in ("auto", "bf16")
        fwd = torch.compile(self.model, dynamic=False, fullgraph=True) if self.compiled else self.model
        self.fwd = (
            DDP(fwd, device_ids=[self.device.index] if self.device.type == "cuda" else None, broadcast_buffers=False)
            if dist.active()
            else fwd
        )
        ns_fn = orthogonalizer(cfg.optim)
        ns = torch.compile(ns_fn) if self.compiled else ns_fn
        self.optimizers = build_optimizers(self.model, cfg.optim, self.device, orthogonalize=ns)
        self.muon = self.optimizers[-2]
        self.cu_seqlens = self.model.wants_cu_seqlens
        self.state = LoopState()
        self.schedule = Schedule(cfg)
        self.params = count_params(self.model)

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def _micro_steps(self, reduce: bool = True) -> torch.Tensor:
        """Forward/backward over the accumulation steps; returns the mean loss (rank-local).

        `reduce=False` keeps every rank's gradient local (DDP never syncs): per-rank clipping."""
        total = torch.zeros((), device=self.device)
        t = self.cfg.train
        for i in range(self.accum):
            x, y = self.batcher.next_batch(t.train_batch_tokens, t.train_seq_len, self.accum)
            # FA3's varlen kernel takes the documents as cu_seqlens, built from the batch outside the graph.
            kw = {"cu_seqlens": batch_cu_seqlens(x, self.cfg.model.doc_max_len, self.device)} if self.cu_seqlens else {}
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            sync = (reduce and i == self.accum - 1) or not isinstance(self.fwd, DDP)
            ctx = contextlib.nullcontext() if sync else self.fwd.no_sync()
            with ctx:
                with self._autocast():
                    loss = self.fwd(x, y, **kw)
                total += loss.detach()
                (loss / self.accum).backward()
        return total / self.accum

    def _validate(self, final: bool = False) -> tuple[float, float, int]:
        """(val_loss, val_bpb, targets scored): the capped prefix, or with `final` the whole split."""
        cfg = self.cfg
        seq = cfg.eval_seq_len
        per_rank = cfg.train.val_batch_size // (self.d.world_size * self.accum)
        if per_rank < seq:
            raise ConfigError(
                f"train.val_batch_size={cfg.train.val_batch_size} gives less than one {seq}-token sequence per rank "
                f"({self.d.world_size} ranks x {self.accum} accumulation steps)"
            )
        totals = evaluate_plain(
            self.model,
            self.val_final if final else self.val,
            self.tables,
            seq,
            per_rank // seq,
            self.device,
            autocast=cfg.runtime.autocast,
        )
        return totals.val_loss, totals.val_bpb, totals.tokens

    def _save_checkpoint(self) -> None:
        s = self.state
        st = {
            "model": self.model.state_dict(),
            "loop": {
                "step": s.step,
                "train_ms": s.train_ms,
                "stop_after": s.stop_after,
                "qat_on": s.qat_on,
                "swa_count": s.swa_count,
                "looping": s.looping,
            },
            "ema": s.ema,
            "swa_sum": s.swa_sum or {},
            "batcher": self.batcher.state_dict(),
        }
        opt_state = [o.state_dict() for o in self.optimizers]
        path = checkpoint.save(
            self.out, s.step, st, opt_state, self.d.rank, self.d.world_size, self.cfg.train.keep_checkpoints
        )
        self.files.metric(kind="event", step=s.step, event="checkpoint", path=str(path))

    def _load_checkpoint(self, path: Path) -> None:
        st, opt_state = checkpoint.load(path, self.d.rank, self.d.world_size, self.device)
        try:
            self._apply_checkpoint(st, opt_state)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            why = " ".join(str(e).split())[:160]
            raise PgolfError(f"{path}: checkpoint does not fit this run ({type(e).__name__}: {why})") from None

    def _apply_checkpoint(self, st: dict, opt_state: list) -> None:
        self.model.load_state_dict(st["model"])
        for opt, sd in zip(self.optimizers, opt_state, strict=True):
            opt.load_state_dict(sd)
        loop = st["loop"]
        s = self.state
        s.step, s.train_ms, s.stop_after = int(loop["step"]), float(loop["train_ms"]), loop["stop_after"]
        s.qat_on, s.swa_count = bool(loop["qat_on"]), int(loop["swa_count"])
        s.looping = bool(loop.get("looping", False))
        self.model.set_looping(s.looping)
        s.ema = {k: v.float() for k, v in st["ema"].items()}
        s.swa_sum = st["swa_sum"] or None
        self.model.set_qat(s.qat_on)
        self.batcher.load_state_dict(st["batcher"])

    # ------------------------------------------------------------------ phases
    def _log_header(self) -> None:
        cfg, f = self.cfg, self.files
        m, t = cfg.model, cfg.train
        f.log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={self.tokenizer_path}")
        n_train = len(list(self.data_dir.glob("fineweb_train_*.bin")))
        f.log(f"train_loader:dataset:{self.data_dir.resolve().name} train_shards:{n_train}")
        cap_note = f" periodic_val_tokens:{len(self.val) - 1}" if self.val is not self.val_final else ""
        pattern = self.data_dir / "fineweb_val_*.bin"
        f.log(f"val_loader:shards pattern={pattern} tokens:{len(self.val_final) - 1}{cap_note}")
        f.log(f"model_params:{self.params}")
        mtp = sum(p.numel() for p in self.model.mtp_heads.parameters())
        f.log(f"mtp_num_heads:{m.mtp_num_heads} mtp_loss_weight:{m.mtp_loss_weight} mtp_params:{mtp}")
        f.log(f"XSA:last_{m.xsa_last_n} active_layers:{m.xsa_layers}")
        f.log(f"world_size:{self.d.world_size} grad_accum_steps:{self.accum}")
        f.log(f"device:{self.device} attention:{self.attention} compile:{self.compiled} bf16_autocast:{self.autocast}")
        f.log(f"attention_mode:gqa num_heads:{m.num_heads} num_kv_heads:{m.num_kv_heads}")
        o = cfg.optim
        emb_lr = o.tied_embed_lr if m.tie_embeddings else o.embed_lr
        head_lr = o.head_lr if not m.tie_embeddings else 0.0
        f.log(
            f"tie_embeddings:{m.tie_embeddings} embed_lr:{emb_lr} head_lr:{head_lr} matrix_lr:{o.matrix_lr} "
            f"scalar_lr:{o.scalar_lr}"
        )
        f.log(
            f"train_batch_tokens:{t.train_batch_tokens} train_seq_len:{t.train_seq_len} iterations:{t.iterations} "
            f"warmup_steps:{t.warmup_steps} max_wallclock_seconds:{t.max_wallclock_seconds:.3f}"
        )
        f.log(f"seed:{t.seed}")

    def _write_run_metadata(self) -> None:
        if not self.d.is_main:
            return
        meta = self.cfg.to_dict()
        meta.update(
            world_size=self.d.world_size,
            grad_accum_steps=self.accum,
            params=self.params,
            # Relative to the run directory: a run (and a submission made from it) names no path of this machine.
            data_dir=os.path.relpath(self.data_dir.resolve(), self.out.resolve()),
            tokenizer=os.path.relpath(Path(self.tokenizer_path).resolve(), self.out.resolve()),
            byte_source=f"sidecar:{self.tables.rule}" if hasattr(self.tables, "rule") else "tables",
        )
        _write_json(self.out / "config.json", meta)
        _write_json(self.out / "system.json", system_info(self.device))
        if self.inputs is not None:
            write_inputs_record(self.out, self.inputs)
        manifest = self.data_dir / "manifest.json"
        if manifest.is_file():
            shutil.copyfile(manifest, self.out / "dataset.json")

    def train_step(self, mult: float) -> torch.Tensor:
        """One optimiser step at LR multiplier `mult` (SPEC §6.3 items 6-10); returns the rank-local loss."""
        t, s = self.cfg.train, self.state
        train_loss = self._optimizer_step(mult, s.step)
        if t.ema_enabled:
            ema_update(s.ema, self.model.state_dict(), t.ema_decay)
        return train_loss

    def _optimizer_step(self, mult: float, step: int) -> torch.Tensor:
        """Gradients, momentum for `step`, LRs at `mult`, clipping, optimiser steps."""
        o = self.cfg.optim
        self._zero_grad()
        # The record clips each rank's own gradient and averages afterwards (F4.2); pgolf clips the average.
        per_rank = o.grad_clip_scope == "rank" and dist.active()
        train_loss = self._micro_steps(reduce=not per_rank)
        mu = self.schedule.momentum(step)
        for g in self.muon.param_groups:
            g["momentum"] = mu
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * mult
        if o.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip_norm)
        if per_rank:
            world = torch.distributed.get_world_size()
            for p in self.model.parameters():
                if p.grad is not None:
                    dist.all_reduce_sum(p.grad).div_(world)
        for opt in self.optimizers:
            opt.step()
        self._zero_grad()
        return train_loss

    def _warmup(self) -> None:
        """Compile/autotune warm-up steps, then every weight, optimiser state and the loader are restored."""
        n = self.cfg.train.warmup_steps
        if n <= 0:
            return
        model_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        opt_states = [_clone_state(o.state_dict()) for o in self.optimizers]
        batcher_state = self.batcher.state_dict()
        self.fwd.train()
        # With depth recurrence the warm-up runs again with the loops on, so a compiled run has both
        # graphs before training starts and the switch never stalls it (FRONTIER F3.6).
        phases = [(False, "warmup_step")] + ([(True, "loop_warmup_step")] if self.cfg.model.num_loops > 0 else [])
        for looping, label in phases:
            self.model.set_looping(looping)
            for i in range(n):
                if self.cfg.train.warmup_full_steps:  # the record's step: momentum ramp and clipping at LR x1
                    self._optimizer_step(1.0, i)
                else:
                    self._zero_grad()
                    self._micro_steps()
                    for opt in self.optimizers:
                        opt.step()
                if n <= 20 or (i + 1) % 10 == 0 or i + 1 == n:
                    self.files.log(f"{label}:{i + 1}/{n}")
        self.model.set_looping(False)
        # F4.4: the record's distributed Muon keeps its momentum outside the state it restores.
        leak = {id(p): st["momentum_buffer"] for p, st in self.muon.state.items() if "momentum_buffer" in st}
        self.model.load_state_dict(model_state)
        for opt, sd in zip(self.optimizers, opt_states, strict=True):
            opt.load_state_dict(sd)
        if self.cfg.optim.muon_momentum_leak:
            for group in self.muon.param_groups:
                for p in group["params"]:
                    if id(p) in leak:
                        self.muon.state[p]["momentum_buffer"] = leak[id(p)]
            self.files.log(f"warmup:muon momentum kept for {len(leak)} matrices (optim.muon_momentum_leak)")
        self._zero_grad()
        self.batcher.load_state_dict(batcher_state)

    def run(self) -> dict:
        cfg, s, f = self.cfg, self.state, self.files
        t = cfg.train
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
            f.log(f"resume:from {self.resume_from.name} step:{s.step} train_time:{s.train_ms:.0f}ms")
        else:
            self._write_run_metadata()
            self._log_header()
            self._warmup()
            s.ema = {k: v.detach().float().clone() for k, v in self.model.state_dict().items()}
        cap_ms = self.schedule.cap_ms  # GPTQ_RESERVE_SECONDS is held back from the budget (FRONTIER F3.5)
        if t.gptq_reserve_seconds > 0 and cap_ms is not None:
            f.log(f"gptq:reserving {t.gptq_reserve_seconds:g}s, effective={cap_ms:.0f}ms")
        self.fwd.train()
        self._sync()
        t0 = time.perf_counter()
        last_log = (s.step, s.train_ms)
        tokens_per_step = t.train_batch_tokens
        while True:
            last = s.step == t.iterations or (s.stop_after is not None and s.step >= s.stop_after)
            if last or (t.val_loss_every > 0 and s.step % t.val_loss_every == 0):
                self._sync()
                s.train_ms += 1000.0 * (time.perf_counter() - t0)
                vl, vb, n_val = self._validate(final=last)
                f.log(
                    f"step:{s.step}/{t.iterations} val_loss:{vl:.4f} val_bpb:{vb:.4f} "
                    f"train_time:{s.train_ms:.0f}ms step_avg:{s.train_ms / max(s.step, 1):.2f}ms"
                )
                f.metric(kind="val", step=s.step, val_loss=vl, val_bpb=vb, targets=n_val, elapsed_s=s.train_ms / 1000.0)
                self._sync()
                t0 = time.perf_counter()
            if last:
                if s.stop_after is not None and s.step < t.iterations:
                    f.log(f"stopping_early: wallclock_cap train_time:{s.train_ms:.0f}ms step:{s.step}/{t.iterations}")
                    f.metric(kind="event", step=s.step, event="stop_wallclock", train_ms=s.train_ms)
                break
            elapsed = s.train_ms + 1000.0 * (time.perf_counter() - t0)
            mult = self.schedule.lr_mult(s.step, elapsed)
            if not s.looping and self.schedule.looping(s.step, elapsed):
                s.looping = True
                self.model.set_looping(True)
                enc, dec = self.model.schedules[True]
                frac = self.schedule.fraction(s.step, elapsed)
                f.log(f"layer_loop:enabled step:{s.step} frac:{frac:.3f} encoder:{enc} decoder:{dec}")
                f.metric(kind="event", step=s.step, event="layer_loop", frac=frac)
            want_qat = t.qat_enabled or (t.late_qat_threshold > 0 and mult < t.late_qat_threshold)
            if want_qat and not s.qat_on:
                s.qat_on = True
                self.model.set_qat(True)
                f.log(f"late_qat:enabled step:{s.step} scale:{mult:.4f}")
                f.metric(kind="event", step=s.step, event="late_qat", lr_mult=mult)

            train_loss = self.train_step(mult)
            # A non-finite loss on any rank stops every rank (checked with the stop flag below).
            flags = torch.tensor([float(not torch.isfinite(train_loss)), 0.0], device=self.device)
            s.step += 1
            approx = s.train_ms + 1000.0 * (time.perf_counter() - t0)
            self._collect_swa(mult)
            loss_v = tps = None
            if t.train_log_every > 0 and (s.step <= 10 or s.step % t.train_log_every == 0):
                # The mean over all ranks (the seed logs rank 0's share only).
                loss_v = float(dist.all_reduce_sum(train_loss.detach().clone())) / self.d.world_size
                dt = (approx - last_log[1]) / 1000.0
                tps = (s.step - last_log[0]) * tokens_per_step / dt if dt > 0 else 0.0
                last_log = (s.step, approx)
                f.log(
                    f"step:{s.step}/{t.iterations} train_loss:{loss_v:.4f} train_time:{approx:.0f}ms "
                    f"step_avg:{approx / s.step:.2f}ms"
                )
                f.metric(
                    kind="train",
                    step=s.step,
                    train_loss=loss_v,
                    lr_mult=mult,
                    tokens_per_s=tps,
                    elapsed_s=approx / 1000.0,
                )
            f.tick(s.step, loss_v, tps)
            flags[1] = float(cap_ms is not None and approx >= cap_ms)
            dist.all_reduce_max(flags)
            if flags[0] > 0:
                good = checkpoint.latest_checkpoint(self.out)
                where = f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"
                f.log(f"error: non-finite training loss at step {s.step}; stopping ({where})")
                raise NonFiniteLossError(f"non-finite training loss at step {s.step}; {where}")
            if s.stop_after is None and flags[1] > 0:
                s.stop_after = s.step
            if t.checkpoint_every > 0 and s.step % t.checkpoint_every == 0:
                self._sync()
                s.train_ms += 1000.0 * (time.perf_counter() - t0)
                self._save_checkpoint()
                t0 = time.perf_counter()
        return self._finish()

    def _collect_swa(self, mult: float) -> None:
        t, s = self.cfg.train, self.state
        if not (t.swa_enabled and mult < t.swa_threshold and s.step % t.swa_every == 0):
            return
        state = self.model.state_dict()
        if s.swa_sum is None:
            s.swa_sum = {k: v.detach().float().clone() for k, v in state.items()}
            s.swa_count = 1
            self.files.log(f"swa:start step:{s.step}")
            self.files.metric(kind="event", step=s.step, event="swa_start")
        else:
            for k, v in state.items():
                s.swa_sum[k].add_(v.detach().float())
            s.swa_count += 1

    def _calibrate_for_export(self) -> None:
        """The frontier export's Hessians from training tokens, on the final weights, with what is left of
        the budget (pgolf.quant.calibrate): RUN/hessians.safetensors + RUN/calibration.json (issue 14)."""
        q = self.cfg.quant
        if q.scheme != "frontier" or q.gptq_calibration_batches <= 0 or not self.d.is_main:
            return
        from pgolf.quant import calibrate
        from pgolf.quant.frontier_export import calib_batch_seqs

        seq = self.cfg.train.train_seq_len
        batches = calibrate.record_batches(self.data_dir, seq, calib_batch_seqs(self.cfg), q.gptq_calibration_batches)
        dtype = torch.float64 if q.hessian_dtype == "float64" else torch.float32
        acct = calibrate.calibrate_run(
            self.model, self.out, batches, self.state.train_ms / 1000.0, self.cfg.train.max_wallclock_seconds, dtype
        )
        self.files.log(
            f"gptq_calibration: {acct['batches']} batches {acct['calibration_s']:.1f}s "
            f"loop+calibration:{acct['loop_plus_calibration_s']:.1f}s within_budget:{acct['within_budget']}"
        )

    def _finish(self) -> dict:
        s, f, t = self.state, self.files, self.cfg.train
        if self.cfg.model.num_loops > 0 and not s.looping:
            # Everything after training uses the loops, as in the record; say so when training never did.
            f.log("layer_loop:warning training ended before model.enable_looping_at; the loops are on from here")
            self.model.set_looping(True)
        if self.device.type == "cuda":
            f.log(
                f"peak memory allocated: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB "
                f"reserved: {torch.cuda.max_memory_reserved() // 1024 // 1024} MiB"
            )
        live = self.model.state_dict()
        if t.swa_enabled and s.swa_count > 0:
            f.log(f"swa:applying average of {s.swa_count} snapshots")
            final = {k: (v / s.swa_count).to(live[k].dtype) for k, v in s.swa_sum.items()}
            self.model.load_state_dict(final)
            f.metric(kind="event", step=s.step, event="swa_applied", count=s.swa_count)
        elif t.ema_enabled:
            f.log("ema:applying EMA weights")
            self.model.load_state_dict({k: v.to(live[k].dtype) for k, v in s.ema.items()})
            f.metric(kind="event", step=s.step, event="ema_applied")
        self._calibrate_for_export()
        t0 = time.perf_counter()
        vl, vb, _ = self._validate(final=True)
        ms = 1000 * (time.perf_counter() - t0)
        f.log(f"DIAGNOSTIC post_ema val_loss:{vl:.4f} val_bpb:{vb:.4f} eval_time:{ms:.0f}ms")
        f.metric(
            kind="final", step=s.step, train_seconds=s.train_ms / 1000.0, post_ema_val_loss=vl, post_ema_val_bpb=vb
        )
        if self.d.is_main:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            tmp = self.out / ".final_model.safetensors.tmp"
            save_file(state, str(tmp), metadata={"format": "pgolf-final-weights", "step": str(s.step)})
            os.replace(tmp, self.out / "final_model.safetensors")
        dist.barrier()
        f.close()
        return {
            "steps": s.step,
            "train_seconds": s.train_ms / 1000.0,
            "post_ema_val_loss": vl,
            "post_ema_val_bpb": vb,
            "params": self.params,
        }


def _clone_state(sd):
    if isinstance(sd, torch.Tensor):
        return sd.detach().clone()
    if isinstance(sd, dict):
        return {k: _clone_state(v) for k, v in sd.items()}
    if isinstance(sd, list):
        return [_clone_state(v) for v in sd]
    return sd


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)
