"""Constants and checks shared by the hostile tests (a module: `conftest` is a name two directories use)."""

from __future__ import annotations

# A model small enough that `pgolf train` takes seconds on two cores.
TINY = [
    "--preset", "tiny", "--no-env",
    "--set", "model.vocab_size=512", "--set", "model.num_layers=2", "--set", "model.model_dim=64",
    "--set", "model.num_heads=2", "--set", "model.num_kv_heads=1", "--set", "model.ve_layers=1",
    "--set", "model.xsa_last_n=2", "--set", "model.bigram_dim=32", "--set", "model.ve_dim=32",
    "--set", "train.train_seq_len=128", "--set", "train.train_batch_tokens=1024", "--set", "eval.seq_len=128",
    "--set", "train.iterations=2", "--set", "train.max_wallclock_seconds=0", "--set", "train.val_loss_every=0",
    "--set", "train.val_max_tokens=2048", "--set", "train.checkpoint_every=1", "--set", "runtime.num_threads=1",
]  # fmt: skip


def one_line_error(r) -> str:
    """The CLI's refusal: exit 2 and exactly one line on stderr, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("pgolf: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return lines[0]
