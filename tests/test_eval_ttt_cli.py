"""`pgolf eval --method ttt-lora|ttt-phased`: runs, and bad input is one line and a non-zero exit."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_eval_cli import cli
from test_eval_fixtures import TOKENIZER, trained_model, val_tokens

import pgolf
from pgolf.data.shards import write_shard

FAST = ["--seq-len", "128", "--stride", "32", "--no-env", "--set", "runtime.device=cpu", "--max-tokens", "600"]
SMALL = ["--set", "eval.ttt_lora_rank=4", "--set", "eval.ttt_prefix_docs=1",
         "--set", "eval.global_ttt_chunk_tokens=256"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_data(tmp_path, monkeypatch, tokens: np.ndarray):
    data = tmp_path / "data"
    data.mkdir()
    write_shard(data / "fineweb_val_000000.bin", tokens)
    shutil.copy(TOKENIZER, data / "tokenizer.model")
    art = tmp_path / "model.pgolf"
    art.write_bytes(b"stand-in")
    _, model = trained_model()
    monkeypatch.setattr(pgolf, "load_artifact", lambda path, device="cpu", preset=None: model)
    return data, art


@pytest.mark.parametrize("method", ["ttt-lora", "ttt-phased"])
def test_eval_runs_the_document_methods(tmp_path, monkeypatch, capsys, method):
    data, art = make_data(tmp_path, monkeypatch, val_tokens(3000))
    rc, out, err = cli(["eval", str(art), "--data", str(data), "--method", method, "--json", *FAST, *SMALL], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert res["tokens"] == 600 and res["score_first"] is True and res["params"]["ttt_lora_rank"] == 4
    assert ("ttt_phases" in res["params"]) == (method == "ttt-phased")


@pytest.mark.parametrize(
    "sets,bos,message",
    [
        ([], False, "ttt-lora needs documents, but the validation split has no BOS markers"),
        (["--set", "eval.ttt_chunk=200"], True, "eval.ttt_chunk=200 is longer than the TTT window of 128 tokens"),
        (["--set", "eval.ttt_lora_rank=80"], True, "eval.ttt_lora_rank=80 is larger than the k projection"),
    ],
)
def test_bad_input_is_one_line_and_a_failure(tmp_path, monkeypatch, capsys, sets, bos, message):
    tokens = val_tokens(3000)
    if not bos:
        tokens = np.where(tokens == 1, 2, tokens).astype(tokens.dtype)
    data, art = make_data(tmp_path, monkeypatch, tokens)
    rc, out, err = cli(["eval", str(art), "--data", str(data), "--method", "ttt-lora", *FAST, *SMALL, *sets], capsys)
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
