"""`pgolf eval` / `pgolf audit` argument handling, outputs and errors (artifact loading stubbed)."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from test_eval_fixtures import TOKENIZER, trained_model, val_tokens

import pgolf
from pgolf.data.shards import write_shard
from pgolf.errors import PgolfError
from pgolf.eval import commands

FAST = ["--seq-len", "128", "--stride", "32", "--batch-seqs", "8", "--no-env", "--set", "runtime.device=cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A data dir (val shard + tokenizer), a stand-in artifact file, and load_artifact returning our model."""
    data = tmp_path / "data"
    data.mkdir()
    write_shard(data / "fineweb_val_000000.bin", val_tokens(3000))
    shutil.copy(TOKENIZER, data / "tokenizer.model")
    art = tmp_path / "model.pgolf"
    art.write_bytes(b"stand-in")
    _, model = trained_model()
    monkeypatch.setattr(pgolf, "load_artifact", lambda path, device="cpu", preset=None: model)
    return tmp_path, data, art


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """What `pgolf` does with argv: the eval commands' parser, one line on stderr for a PgolfError."""
    parser = argparse.ArgumentParser(prog="pgolf")
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except PgolfError as e:
        print(f"pgolf: error: {e}", file=__import__("sys").stderr)
        rc = e.exit_code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_eval_json_max_tokens_dump_and_out(setup, capsys):
    tmp, data, art = setup
    dump, out_file = tmp / "nll.npy", tmp / "res.json"
    rc, out, err = cli(["eval", str(art), "--data", str(data), "--method", "sliding", "--max-tokens", "777",
                        "--dump-nll", str(dump), "--out", str(out_file), "--json", *FAST], capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads(out)
    for key in ("method", "val_loss", "val_bpb", "tokens", "bytes", "seconds", "score_first", "unk_tokens",
                "world_size", "device", "params", "max_tokens"):  # fmt: skip
        assert key in res, key
    assert res["tokens"] == 777 and res["max_tokens"] == 777 and res["score_first"] is True
    assert res["params"]["stride"] == 32 and res["params"]["seq_len"] == 128
    nll = np.load(dump)
    assert nll.dtype == np.float64 and nll.shape == (777,)
    assert nll.sum() == pytest.approx(res["val_loss"] * res["tokens"], rel=1e-12)
    assert json.loads(out_file.read_text())["val_bpb"] == res["val_bpb"]
    assert len(out.strip().splitlines()) == 1


def test_eval_slot_is_labelled_and_flags_reach_the_config(setup, capsys):
    _, data, art = setup
    rc, out, err = cli(["eval", str(art), "--data", str(data), "--method", "slot", "--max-tokens", "400",
                        "--slot-steps", "3", "--slot-impl", "full", "--slot-schedule", "exact", "--json", *FAST],
                       capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads(out)
    assert res["score_first"] is False
    assert res["params"]["slot_steps"] == 3 and res["params"]["slot_impl"] == "full"
    assert res["params"]["slot_schedule"] == "exact"


def test_eval_plain_text_output(setup, capsys):
    _, data, art = setup
    rc, out, _ = cli(["eval", str(art), "--data", str(data), "--method", "ttt", "--max-tokens", "300",
                      "--ttt-chunk-tokens", "128", "--ttt-epochs", "1", *FAST], capsys)  # fmt: skip
    assert rc == 0 and out.startswith("ttt val_loss:") and "score-first" in out


@pytest.mark.parametrize(
    "change,needle",
    [
        ("missing_artifact", "artifact not found"),
        ("missing_data", "not found"),
        ("bad_ids", "vocab"),
        ("bad_stride", "stride"),
        ("no_tokenizer", "tokenizer"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(setup, capsys, change, needle):
    tmp, data, art = setup
    argv = ["eval", str(art), "--data", str(data), "--method", "sliding", "--max-tokens", "200", *FAST]
    if change == "missing_artifact":
        argv[1] = str(tmp / "nope.pgolf")
    elif change == "missing_data":
        argv[3] = str(tmp / "nodata")
    elif change == "bad_ids":
        bad = val_tokens(300).astype(np.int64)
        bad[10] = 1500
        write_shard(data / "fineweb_val_000000.bin", bad)
    elif change == "bad_stride":
        argv += ["--stride", "500"]
    elif change == "no_tokenizer":
        (data / "tokenizer.model").unlink()
    rc, out, err = cli(argv, capsys)
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err.lower(), err


def test_explicit_tokenizer(setup, capsys):
    _, data, art = setup
    (data / "tokenizer.model").unlink()
    rc, out, err = cli(["eval", str(art), "--data", str(data), "--method", "plain", "--max-tokens", "256",
                        "--tokenizer", str(TOKENIZER), "--json", *FAST], capsys)  # fmt: skip
    assert rc == 0, err
    assert json.loads(out)["tokens"] == 256


def test_audit_cli(setup, capsys, monkeypatch):
    _, data, art = setup
    base = ["audit", str(art), "--data", str(data), "--tokens", "600", "--json", *FAST]
    rc, out, err = cli([*base, "--method", "slot"], capsys)
    rep = json.loads(out)
    assert rc == 0 and rep["method"] == "slot" and rep["score_first"] is False and rep["label"] is False
    assert {"max_change", "positions"} <= rep.keys()
    rc, out, _ = cli([*base, "--method", "sliding"], capsys)
    assert rc == 0 and json.loads(out)["score_first"] is True
    monkeypatch.setitem(commands.SCORE_FIRST, "slot", True)  # a method claiming score-first that is not
    rc, out, err = cli([*base, "--method", "slot"], capsys)
    assert rc == 1 and json.loads(out)["caught"] is True and "labelled score-first" in err


def test_audit_all_prints_the_four_conditions_of_every_method(setup, capsys):
    _, data, art = setup
    rc, out, err = cli(["audit", str(art), "--data", str(data), "--all", "--tokens", "512", *FAST], capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["method", "label"] and len(lines) == 1 + len(commands.METHOD_CHOICES)
    slot = next(x for x in lines if x.startswith("slot "))
    assert "C1 FAIL" in slot and "C3 FAIL" in slot and "C2 pass" in slot and "C4 pass" in slot
    ran = [x for x in lines[1:] if "not run:" not in x]
    assert all(x.count("pass") == 4 for x in ran if not x.startswith("slot ")) and len(ran) >= 6
    # A method that cannot run on this model or data (the document methods' default LoRA rank is larger
    # than this toy model's projections) is reported with its one-line reason, not fatal.
    assert all(x.split()[0] in ("ttt-lora", "ttt-phased") for x in lines[1:] if "not run:" in x)
    rc, out, err = cli(["audit", str(art), "--data", str(data), "--tokens", "512", *FAST], capsys)
    assert rc != 0 and "--method" in err and len(err.strip().splitlines()) == 1


def test_eval_json_has_phases_and_the_budget(setup, capsys):
    _, data, art = setup
    rc, out, err = cli(["eval", str(art), "--data", str(data), "--method", "ngram-tilt", "--ngram-expert", "2135",
                        "--max-tokens", "512", "--json", *FAST], capsys)  # fmt: skip
    assert rc == 0, err
    res = json.loads(out)
    assert res["params"]["ngram_expert"] == "2135" and res["phases"]["scoring"] > 0
    assert res["within_600s"] is True and abs(res["total_seconds"] - sum(res["phases"].values())) < 1e-9
