"""Memory read bandwidth, cached per machine and thread count, and the decode roofline it sets."""

from __future__ import annotations

import pytest

from evalbench.metrics import bandwidth
from evalbench.metrics.bandwidth import bytes_per_decode_step, measure_read_bandwidth, read_bandwidth, roofline
from evalbench.metrics.memory import weight_bytes


def test_bandwidth_is_measured_once_and_remeasured_on_request(tmp_path, monkeypatch):
    calls = []

    def fake_probe(threads: int) -> float:
        calls.append(threads)
        return 1e10 + len(calls)

    monkeypatch.setattr(bandwidth, "measure_read_bandwidth", fake_probe)
    first = read_bandwidth(tmp_path, "box", threads=2)
    again = read_bandwidth(tmp_path, "box", threads=2)
    other_threads = read_bandwidth(tmp_path, "box", threads=1)
    assert calls == [2, 1] and first["bytes_per_s"] == again["bytes_per_s"] == 1e10 + 1
    assert other_threads["bytes_per_s"] == 1e10 + 2
    assert read_bandwidth(tmp_path, "box", threads=2, remeasure=True)["bytes_per_s"] == 1e10 + 3
    assert read_bandwidth(tmp_path, "box", threads=2)["bytes_per_s"] == 1e10 + 3  # the new figure is kept


def test_real_probe_reads_at_a_plausible_rate():
    rate = measure_read_bandwidth(threads=1, buffer_bytes=256 << 20, passes=2)
    assert 5e8 < rate < 1e12  # 0.5 GB/s .. 1 TB/s


def test_decode_step_bytes_count_weights_and_kv_cache(tiny_model):
    config = tiny_model.config
    step = bytes_per_decode_step(tiny_model, batch_size=3, context_tokens=100)
    embedding = tiny_model.get_input_embeddings().weight
    assert not config.tie_word_embeddings
    # untied: the input embedding contributes one row per sequence, the rest is read whole
    assert step["weights"] == weight_bytes(tiny_model) - embedding.nbytes + 3 * embedding[0].nbytes
    head_dim = config.hidden_size // config.num_attention_heads
    assert step["kv_cache"] == 3 * 100 * 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4
    fields = roofline(tiny_model, batch_size=3, prompt_tokens=90, new_tokens=20, bandwidth=1e10)
    assert fields["decode_bytes_per_step"] == pytest.approx(step["total"])  # mean context 90 + 20 / 2 = 100
    assert fields["roofline_tokens_per_s"] == pytest.approx(3 * 1e10 / step["total"])


def test_tied_embeddings_are_read_whole(tiny_model):
    tiny_model.lm_head.weight = tiny_model.get_input_embeddings().weight
    step = bytes_per_decode_step(tiny_model, batch_size=1, context_tokens=0)
    assert step["weights"] == weight_bytes(tiny_model) and step["kv_cache"] == 0
