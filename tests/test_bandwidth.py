"""Memory read bandwidth, cached per machine and thread count, and the decode roofline it sets."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from evalbench.metrics import bandwidth
from evalbench.metrics.bandwidth import bytes_per_decode_step, measure_read_bandwidth, read_bandwidth
from evalbench.metrics.memory import weight_bytes


def test_bandwidth_is_measured_once_per_thread_count_and_size_and_remeasured_on_request(tmp_path, monkeypatch):
    calls = []

    def fake_probe(threads: int, buffer_bytes: int) -> dict:
        calls.append((threads, buffer_bytes >> 20))
        rate = {1: 2e10, 2: 1.5e10, 3: 3e10}[threads] + len(calls)  # 2 threads disturbed by a slow spell
        return {"bytes_per_s": rate, "method": "fake", "rates": {"fake": rate}}

    monkeypatch.setattr(bandwidth, "measure_read_bandwidth", fake_probe)
    two = read_bandwidth(tmp_path, "box", threads=2, working_set_bytes=600e6)
    assert calls == [(1, 512), (2, 512)] and two["threads"] == 1 and two["bytes_per_s"] == 2e10 + 1  # >= 1 thread's
    assert read_bandwidth(tmp_path, "box", threads=1, working_set_bytes=513 << 20)["bytes_per_s"] == 2e10 + 1
    assert len(calls) == 2  # the same buffer size: cached
    three = read_bandwidth(tmp_path, "box", threads=3, working_set_bytes=600e6)
    assert calls[2:] == [(3, 512)] and three["threads"] == 3 and three["bytes_per_s"] == 3e10 + 3
    small = read_bandwidth(tmp_path, "box", threads=1, working_set_bytes=90e6)
    assert calls[3:] == [(1, 64)] and small["buffer_bytes"] == 64 << 20  # a smaller working set: its own probe
    again = read_bandwidth(tmp_path, "box", threads=1, working_set_bytes=600e6, remeasure=True)
    assert calls[4:] == [(1, 512)] and again["bytes_per_s"] == 2e10 + 5
    assert read_bandwidth(tmp_path, "box", threads=1, working_set_bytes=600e6)["bytes_per_s"] == 2e10 + 5


@pytest.mark.parametrize(
    ("working_set", "buffer"),
    [(100, 1 << 20), (3 << 20, 2 << 20), (538e6, 512 << 20), (64 << 20, 64 << 20), (40e9, 1 << 30)],
)
def test_the_probe_buffer_is_the_working_set_rounded_down_to_a_power_of_two(working_set, buffer):
    assert bandwidth.buffer_bytes_for(working_set) == buffer


def _numpy_read_rate(buffer_bytes: int, passes: int) -> float:
    """An independent read-bandwidth figure: numpy summing a buffer of the same size, best of ``passes``."""
    buffer = np.ones(buffer_bytes // 4, dtype=np.float32)
    buffer.sum()
    best = min(_timed(buffer.sum) for _ in range(passes))
    return buffer.nbytes / best


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def test_real_probe_agrees_with_an_independent_read():
    probe = measure_read_bandwidth(threads=1, buffer_bytes=256 << 20, passes=3)
    independent = _numpy_read_rate(256 << 20, passes=3)
    assert 0.5 < probe["rates"]["sum float32"] / independent < 2.0, (probe, independent)  # two summing loops
    assert probe["bytes_per_s"] == max(probe["rates"].values()) and len(probe["rates"]) == 3


def _kv_cache_bytes(model, tokens: int) -> int:
    """What the model's own KV cache holds after a forward pass over ``tokens`` tokens of one sequence."""
    with torch.inference_mode():
        cache = model(input_ids=torch.zeros(1, tokens, dtype=torch.long), use_cache=True).past_key_values
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def test_decode_step_bytes_count_weights_and_kv_cache(tiny_model):
    config = tiny_model.config
    step = bytes_per_decode_step(tiny_model, batch_size=3, context_tokens=100)
    assert not config.tie_word_embeddings
    # By hand: 2 layers of q, o (64x64), k, v (64x32), gate, up, down (64x128) and two norms, a final norm and
    # the output head (vocab x 64), in fp32; the untied input embedding gives one row (64) per sequence; the
    # rotary embedding keeps two buffers of head_dim / 2 = 8 inverse frequencies.
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    parameters = 2 * per_layer + 64 + config.vocab_size * 64 + 3 * 64 + 2 * 8
    assert step["weights"] == 4 * parameters
    assert step["kv_cache"] == 3 * _kv_cache_bytes(tiny_model, 100)


def test_the_recorded_roofline_reads_the_kv_cache_at_the_mean_context_of_the_timed_steps(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from evalbench import timed_generation

    asked = []

    class Backend:
        def decode_bytes_per_step(self, batch_size: int, context_tokens: float) -> dict[str, float]:
            asked.append((batch_size, context_tokens))
            return {"weights": 1e6, "kv_cache": 0.0, "total": 1e6}

    probe = {"bytes_per_s": 1e10, "threads": 1, "method": "fake", "buffer_bytes": 1 << 20, "file": ""}
    monkeypatch.setattr(timed_generation, "read_bandwidth", lambda *args: probe)
    for kv_cache in (True, False):
        speed = {"new_tokens": 20, "kv_cache": kv_cache, "remeasure_bandwidth": False}
        cfg = OmegaConf.create({"batch_size": 3, "threads": 1, "cache_dir": str(tmp_path), "speed": speed})
        timed_generation.record_roofline(cfg, {"decode_tokens_per_s": 1.0, "prompt_tokens": 90}, Backend())
    # The 19 timed decode steps after a 90-token prompt attend to 91..109 tokens; without a cache none is read.
    assert asked == [(3, np.mean(range(91, 110))), (3, 0)]


def test_a_run_faster_than_the_cached_bandwidth_allows_measures_it_again(tmp_path, monkeypatch):
    """A probe cached in a slow spell (10 GB/s) would put a run at 150% of its roofline: the bandwidth is probed
    again (30 GB/s here) and the run lands at 50%; a run within the cached bound asks for no new probe."""
    from omegaconf import OmegaConf

    from evalbench import timed_generation

    class Backend:
        def decode_bytes_per_step(self, batch_size: int, context_tokens: float) -> dict[str, float]:
            return {"weights": 1e9, "kv_cache": 0.0, "total": 1e9}

    asked = []

    def read_bandwidth(cache_dir, machine_id, threads, working_set, remeasure):
        asked.append(remeasure)
        speed = 3e10 if remeasure else 1e10
        return {"bytes_per_s": speed, "threads": threads, "method": "fake", "buffer_bytes": 1 << 30, "file": ""}

    monkeypatch.setattr(timed_generation, "read_bandwidth", read_bandwidth)
    speed = {"new_tokens": 20, "kv_cache": True, "remeasure_bandwidth": False}
    cfg = OmegaConf.create({"batch_size": 1, "threads": 2, "cache_dir": str(tmp_path), "speed": speed})
    fast, calm = {"decode_tokens_per_s": 15.0, "prompt_tokens": 8}, {"decode_tokens_per_s": 5.0, "prompt_tokens": 8}
    timed_generation.record_roofline(cfg, fast, Backend())
    timed_generation.record_roofline(cfg, calm, Backend())
    assert asked == [False, True, False]
    assert fast["bandwidth_remeasured"] and fast["roofline_fraction"] == pytest.approx(0.5)
    assert not calm["bandwidth_remeasured"] and calm["roofline_fraction"] == pytest.approx(0.5)


def test_tied_embeddings_are_read_whole(tiny_model):
    tiny_model.lm_head.weight = tiny_model.get_input_embeddings().weight
    step = bytes_per_decode_step(tiny_model, batch_size=1, context_tokens=0)
    assert step["weights"] == weight_bytes(tiny_model) and step["kv_cache"] == 0
