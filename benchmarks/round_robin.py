"""Decode speed of several generators timed round-robin, and their medians against a baseline, printed."""

from __future__ import annotations

import statistics

import torch

from evalbench.environment import fingerprint
from evalbench.metrics.speed import Generate, measure_speed


def time_round_robin(generators: dict[str, Generate], prompts: torch.Tensor, new_tokens: int, rounds: int):
    """Decode tokens/s of each generator per round; a slow spell of a shared machine hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in generators}
    for round_index in range(rounds):
        for name, generate in generators.items():
            samples[name].append(measure_speed(generate, prompts, new_tokens, 1, 1)["decode_tokens_per_s"])
        print(f"round {round_index + 1}/{rounds}: " + ", ".join(f"{n} {s[-1]:.1f}" for n, s in samples.items()))
    return samples


def print_medians(samples: dict[str, list[float]], baseline: str, setting: str) -> dict[str, float]:
    """Print the machine, ``setting`` and each median with its ratio to ``baseline``'s; return the medians."""
    env = fingerprint()
    print(f"\n{env['cpu_model']} ({env['cpu_isa']}), {env['logical_cores']} cores, torch {env['torch']}, {setting}")
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{'configuration':<16}{'decode tok/s (median)':>22}{'min':>8}{'max':>8}{'x ' + baseline:>16}")
    for name, values in samples.items():
        ratio = median[name] / median[baseline]
        print(f"{name:<16}{median[name]:>22.1f}{min(values):>8.1f}{max(values):>8.1f}{ratio:>16.2f}")
    return median
