"""runtime.cpu_malloc: a CPU run asks glibc to keep freed memory; `system` leaves malloc alone."""

from __future__ import annotations

import sys

import pytest

from pgolf import cpumalloc, dist
from pgolf.config import ConfigError, load_config


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_keep_freed_memory_takes_effect_once(monkeypatch):
    monkeypatch.setattr(cpumalloc, "_done", False)
    assert cpumalloc.keep_freed_memory() is True
    assert cpumalloc.keep_freed_memory() is True  # idempotent


@pytest.mark.parametrize(("mode", "called"), [("auto", True), ("keep", True), ("system", False)])
def test_dist_init_applies_the_setting_on_a_cpu_run(monkeypatch, mode, called):
    seen = []
    monkeypatch.setattr(cpumalloc, "keep_freed_memory", lambda: seen.append(1) or True)
    cfg = load_config("tiny", [f"runtime.cpu_malloc={mode}", "runtime.device=cpu"], environ={})
    dist.init(cfg.runtime)
    assert bool(seen) is called


def test_an_unknown_mode_is_one_config_error():
    with pytest.raises(ConfigError, match="cpu_malloc"):
        load_config("tiny", ["runtime.cpu_malloc=jemalloc"], environ={})
