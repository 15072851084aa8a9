"""The seed-log parser on PR #1313's three logs: the published table, the mislabelled lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgolf.report.seedlog import LogParseError, aggregate_logs, parse_seed_log, parse_seed_log_text

LOG_DIR = Path("/work/shared/reference/pr1313_logs")
needs_logs = pytest.mark.skipif(not LOG_DIR.is_dir(), reason="reference logs not available")


@pytest.fixture(scope="module")
def logs():
    return {lg.seed: lg for lg in (parse_seed_log(p) for p in sorted(LOG_DIR.glob("*.log")))}


@needs_logs
def test_per_seed_slot_and_run_facts(logs):
    assert sorted(logs) == [42, 1337, 2024]
    slot = {s: lg.evals["slot"].val_bpb for s, lg in logs.items()}
    assert slot == {1337: 0.86830694, 42: 0.85815415, 2024: 0.86466486}
    assert logs[1337].evals["slot"].val_loss == 1.46609658
    assert logs[1337].evals["slot"].score_first is False
    lg = logs[42]
    assert (lg.model_params, lg.world_size, lg.grad_accum_steps) == (26862694, 8, 1)
    assert (lg.steps, lg.train_time_ms, lg.step_avg_ms, lg.stopped_early) == (6563, 600059, 91.43, True)
    assert (lg.swa_start_step, lg.late_qat_step, lg.late_qat_scale) == (5900, 6041, 0.1498)
    assert (lg.peak_mem_allocated_mib, lg.peak_mem_reserved_mib) == (22524, 22564)
    assert lg.post_ema == {"val_loss": 1.9199, "val_bpb": 1.1370, "eval_time_ms": 2108}
    assert (lg.serialized_model_bytes, lg.model_bytes, lg.code_bytes, lg.total_bytes) == (
        105919389,
        15765720,
        61984,
        15827704,
    )
    assert lg.fits
    assert [v["step"] for v in lg.val] == [0, 4000, 6563]
    assert lg.val[1]["val_bpb"] == 1.2061
    assert logs[1337].steps == 6034 and logs[2024].steps == 6568


@needs_logs
def test_roundtrip_is_not_the_mislabelled_copy(logs):
    """Three final_int6_roundtrip_exact lines: the first is the round-trip, then copies of s96 and s64."""
    expect = {  # (round-trip, sliding s96, sliding s64) exact bpb, SPEC §10
        42: (1.14456134, 1.12099727, 1.12096588),
        1337: (1.14929216, 1.12580133, 1.12577694),
        2024: (1.14569755, 1.12211356, 1.12208268),
    }
    for seed, (rt, s96, s64) in expect.items():
        lg = logs[seed]
        assert lg.evals["roundtrip"].val_bpb == rt
        assert lg.evals["sliding_s96"].val_bpb == s96 and lg.evals["sliding_s96"].stride == 96
        assert lg.evals["sliding_s64"].val_bpb == s64 and lg.evals["sliding_s64"].stride == 64
        assert all(e.exact for e in lg.evals.values())
        assert [m["copy_of"] for m in lg.mislabelled] == ["sliding_s96", "sliding_s64"]
        assert all(m["values_match"] and m["label"] == "final_int6_roundtrip_exact" for m in lg.mislabelled)
    assert logs[42].evals["roundtrip"].val_loss == 1.93254388
    assert logs[1337].evals["sliding_s64"].eval_time_ms == 77684


@needs_logs
def test_published_aggregates(logs):
    agg = aggregate_logs(list(logs.values()))
    m = agg["aggregate"]["methods"]
    slot = m["slot"]["val_bpb"]
    assert round(slot["mean"], 4) == 0.8637 and slot["mean"] == pytest.approx(0.86370865, abs=5e-9)
    assert round(slot["sample_std"], 4) == 0.0051 and slot["sample_std"] == pytest.approx(0.00514, abs=5e-6)
    assert slot["pop_std"] == pytest.approx(0.00420, abs=5e-6)
    table = {  # SPEC §10 aggregates: mean, sample std, population std
        "sliding_s96": (1.12297072, 0.00251, 0.00205),
        "sliding_s64": (1.12294183, 0.00252, 0.00206),
        "roundtrip": (1.14651702, 0.00247, 0.00202),
    }
    for name, (mu, sd, psd) in table.items():
        d = m[name]["val_bpb"]
        assert d["mean"] == pytest.approx(mu, abs=5e-9), name
        assert d["sample_std"] == pytest.approx(sd, abs=5e-6), name
        assert d["pop_std"] == pytest.approx(psd, abs=5e-6), name
        assert m[name]["score_first"] is True
    assert m["slot"]["score_first"] is False
    assert agg["honest"]["method"] in ("sliding_s64", "sliding_s96")
    assert set(agg["two_pass"]) == {"slot"}
    assert agg["mislabelled_lines"] == 6 and len(agg["warnings"]) == 3
    assert agg["all_fit"] is True
    assert {p["seed"] for p in agg["per_seed"]} == {42, 1337, 2024}


def test_clean_log_without_mislabelling():
    text = """seed:7
model_params:1000
step:0/50 val_loss:6.9000 val_bpb:4.0000 train_time:0ms step_avg:0.01ms
step:10/50 train_loss:5.0000 train_time:1000ms step_avg:100.00ms
step:20/50 val_loss:4.0000 val_bpb:2.5000 train_time:2000ms step_avg:100.00ms
Code size: 100 bytes
Serialized model int6+lzma: 900 bytes
final_int6_roundtrip val_loss:4.1000 val_bpb:2.6000 eval_time:5ms
final_int6_roundtrip_exact val_loss:4.10000001 val_bpb:2.60000001
final_int6_sliding_window val_loss:4.0500 val_bpb:2.5500 stride:64 eval_time:9ms
final_int6_sliding_window_exact val_loss:4.05000001 val_bpb:2.55000001
"""
    lg = parse_seed_log_text(text, "clean.log")
    assert lg.seed == 7 and lg.steps == 20 and lg.train_time_ms == 2000 and lg.step_avg_ms == 100.0
    assert lg.total_bytes == 1000 and not lg.mislabelled
    assert lg.evals["roundtrip"].val_bpb == 2.60000001
    assert lg.evals["sliding_s64"].val_bpb == 2.55000001 and "sliding_s96" not in lg.evals


def test_unparseable_and_missing(tmp_path):
    bad = tmp_path / "notes.log"
    bad.write_text("hello\nworld\n")
    with pytest.raises(LogParseError, match="notes.log"):
        parse_seed_log(bad)
    with pytest.raises(LogParseError, match="missing.log"):
        parse_seed_log(tmp_path / "missing.log")


# --------------------------------------------------------------------------- every format on the main branch
# Excerpts of real record logs (tests/fixtures/logs/gen_excerpts.py made them; the numbers below are
# the lines of those files).
FIX = Path(__file__).resolve().parent / "fixtures" / "logs"


def test_baseline_int8_zlib():
    lg = parse_seed_log(FIX / "baseline_int8_zlib.log")
    assert (lg.seed, lg.family, lg.steps, lg.train_time_ms) == (1337, "baseline", 13780, 600038)
    assert lg.total_bytes == 15863489  # the int8+zlib line, not the raw "Total submission size: 67272625"
    assert lg.code_bytes == 47642 and lg.val_tokens == 63779840
    assert list(lg.evals) == ["roundtrip"] and lg.evals["roundtrip"].val_bpb == 1.22436570
    assert lg.headline.name == "roundtrip" and lg.evals["roundtrip"].eval_time_ms == 1401


def test_march_legal_ttt_is_the_headline_not_sliding():
    lg = parse_seed_log(FIX / "march_legal_ttt_seed42.log")
    assert lg.evals["roundtrip"].val_bpb == 1.14603270
    assert lg.evals["sliding_s64"].val_bpb == 1.12266500
    ttt = lg.evals["ttt"]
    assert (ttt.val_bpb, ttt.val_loss, ttt.exact, ttt.eval_time_ms, ttt.label) == (
        1.12002032,
        1.89110239,
        True,
        408049,
        "legal_ttt",
    )
    assert lg.headline is ttt  # the record's figure: printed last, score-first
    # the legacy int8 line repeats the sliding numbers: a copy, not a second round-trip
    assert [(m["label"], m["copy_of"]) for m in lg.mislabelled] == [("final_int8_zlib_roundtrip_exact", "sliding_s64")]
    assert "ttt_sliding" not in str(list(lg.evals))  # the progress line `ttt_sliding:done val_loss=` is no block
    assert lg.post_ema == {"val_loss": 1.9208, "val_bpb": 1.1376, "eval_time_ms": 1977}
    assert (lg.train_time_ms, lg.steps, lg.total_bytes, lg.val_tokens) == (600128, 7182, 15876510, 62021632)


def test_march_sliding_eval_with_stride_before_the_loss():
    lg = parse_seed_log(FIX / "march_sliding_eval_stride.log")
    assert lg.evals["sliding_s64"].val_bpb == 1.15555486 and lg.headline.name == "sliding_s64"
    assert lg.total_bytes == 15878809 and lg.evals["roundtrip"].val_bpb == 1.18908459


def test_april_hparams_block_and_standalone_legal_ttt_exact():
    lg = parse_seed_log(FIX / "april_legal_ttt_exact_seed42.log")
    assert (lg.seed, lg.seed_source, lg.family) == (42, "hparams", "april")
    assert (lg.steps, lg.train_time_ms, lg.val_tokens) == (5082, 588015, 40540160)
    assert lg.val[-1] == {
        "step": 5082,
        "val_loss": 2.8167,
        "val_bpb": 1.0904,
        "train_time_ms": None,
        "step_avg_ms": None,
    }
    assert lg.evals["roundtrip"].val_bpb == 1.10125385  # `quantized val_loss:...`
    assert lg.evals["sliding"].val_bpb == 1.08470119
    assert lg.evals["ttt"].val_bpb == 1.08314800 and lg.evals["ttt"].eval_time_ms == 289945
    assert lg.headline.name == "ttt" and not lg.mislabelled
    assert lg.post_ema["val_bpb"] == 1.08951985  # `pre-quantization post-ema` is a diagnostic, not a block
    assert (lg.total_bytes, lg.code_bytes) == (15992546, 16719)
    assert lg.train[0]["train_time_ms"] == 0.0  # `train_time: 0.0m`


def test_april_timestamped_lines_and_compressed_code():
    lg = parse_seed_log(FIX / "april_ttt_lora_stamped.txt")
    assert (lg.seed, lg.train_shards, lg.val_tokens, lg.vocab_size) == (0, 128, 40540160, 8192)
    assert (lg.code_bytes, lg.code_bytes_uncompressed, lg.total_bytes) == (28599, 139831, 15996697)
    assert lg.headline.name == "ttt_phased" and lg.headline.val_bpb == 1.07216564
    assert lg.total_eval_time_ms == 500100 and lg.train_time_ms == 587091
    assert lg.evals["roundtrip"].val_bpb == 1.08336093  # `diagnostic quantized`


def test_april_frontier_pr1855():
    lg = parse_seed_log(FIX / "april_phased_pr1855_seed42.log")
    assert (lg.seed, lg.caseops, lg.train_shards, lg.val_tokens) == (42, True, 80, 47851520)
    assert lg.headline.name == "ttt_phased" and lg.headline.val_bpb == 1.05989454
    assert (lg.total_bytes, lg.code_bytes, lg.total_eval_time_ms) == (15897259, 31999, 508800)
    assert (lg.steps, lg.train_time_ms, lg.world_size) == (4945, 599592, 8)
    assert lg.post_ema["val_bpb"] == 1.06395844 and lg.evals["roundtrip"].val_bpb == 1.07254371


def test_ternary_key_value_dump():
    lg = parse_seed_log(FIX / "ternary_kv_seed42.txt")
    assert (lg.seed, lg.seed_source, lg.total_bytes, lg.train_time_ms) == (42, "hparams", 15993853, 599652)
    assert lg.headline.name == "sliding_s16" and lg.headline.val_bpb == 1.1565


def test_seed_fixture_excerpts_match_the_published_numbers():
    logs = {lg.seed: lg for lg in (parse_seed_log(p) for p in sorted((FIX / "seed_pr1313").glob("*.log")))}
    assert logs[42].evals["roundtrip"].val_bpb == 1.14456134
    assert [m["copy_of"] for m in logs[42].mislabelled] == ["sliding_s96", "sliding_s64"]
    agg = aggregate_logs(list(logs.values()))
    assert agg["honest"]["method"] == "sliding_s64"  # SLOT is printed last but is two-pass
    assert agg["honest"]["val_bpb"]["mean"] == pytest.approx(1.12294183, abs=5e-9)
    assert agg["two_pass"]["slot"]["val_bpb"]["mean"] == pytest.approx(0.86370865, abs=5e-9)


def test_an_unreadable_file_is_one_line_and_the_rest_go_on(tmp_path):
    import shutil

    from pgolf.report.seedlog import parse_logs

    shutil.copy(FIX / "baseline_int8_zlib.log", tmp_path / "a.log")
    (tmp_path / "notes.txt").write_text("nothing here\n")
    (tmp_path / "requirements.txt").write_text("torch\n")  # not a log: never read
    logs, errors = parse_logs([tmp_path, tmp_path / "missing.log"])
    assert [Path(lg.path).name for lg in logs] == ["a.log"]
    assert len(errors) == 2 and "notes.txt" in errors[0] and "missing.log" in errors[1]
    assert all("\n" not in e for e in errors)


def test_cli_from_logs_goes_on_past_a_bad_file_and_prints_json(tmp_path, capsys):
    import json
    import shutil

    from pgolf.cli import main

    for p in (FIX / "seed_pr1313").glob("*.log"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.log").write_bytes(b"\x00\xff garbage\n")
    assert main(["report", "--from-logs", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert len(d["per_seed"]) == 3 and {p["seed"] for p in d["per_seed"]} == {42, 1337, 2024}
    assert d["honest"]["method"] == "sliding_s64" and d["aggregate"]["methods"]["slot"]["score_first"] is False
    assert len(d["skipped"]) == 1 and "broken.log" in d["skipped"][0]
    assert err.count("skipped:") == 1
    assert main(["report", "--from-logs", str(tmp_path / "broken.log")]) == 2  # nothing readable: one-line error
    assert "no readable training log" in capsys.readouterr().err


def test_legal_ttt_record_reports_its_ttt_mean_not_sliding():
    """2026-03-23_LeakyReLU_LegalTTT_ParallelMuon: README headline 1.1194 (legal_ttt_exact), sliding 1.1218."""
    logs = [parse_seed_log(p) for p in sorted(FIX.glob("march_legal_ttt_seed*.log"))]
    assert sorted(lg.seed for lg in logs) == [42, 1337, 2025]
    agg = aggregate_logs(logs)
    ttt = [lg.evals["ttt"].val_bpb for lg in logs]
    assert agg["honest"]["method"] == "ttt"
    assert agg["honest"]["val_bpb"]["mean"] == pytest.approx(sum(ttt) / 3, abs=1e-12)
    assert round(agg["honest"]["val_bpb"]["mean"], 4) == 1.1194
    assert round(agg["aggregate"]["methods"]["sliding_s64"]["val_bpb"]["mean"], 4) == 1.1218
    assert agg["mislabelled_lines"] == 3  # one legacy int8 copy per log


def test_a_reevaluation_log_replaces_its_seeds_figures(tmp_path):
    """2026-04-23_…: ttt_pr1767/seed_N.log re-evaluates each seed's artifact; the README claims those figures."""
    import shutil

    from pgolf.report.seedlog import dedupe_logs, parse_logs

    shutil.copy(FIX / "april_phased_pr1855_seed42.log", tmp_path / "train_seed42.log")
    (tmp_path / "ttt").mkdir()
    (tmp_path / "ttt" / "seed_42.log").write_text(
        "quantized_ttt_phased val_loss:2.31000000 val_bpb:1.05500000 eval_time:400000ms\ntotal_eval_time:400.0s\n"
    )
    logs, errors = parse_logs([tmp_path])
    assert not errors and len(logs) == 2
    logs, notes = dedupe_logs(logs)
    assert len(logs) == 1 and "re-evaluation of seed 42" in notes[0]
    lg = logs[0]
    assert lg.headline.val_bpb == 1.055 and lg.headline.source.endswith("seed_42.log")
    assert (lg.total_eval_time_ms, lg.train_time_ms, lg.total_bytes) == (400000, 599592, 15897259)
