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
