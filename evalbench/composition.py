"""Configurations that Hydra cannot compose (``precision=int3``) still become failed records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from evalbench.errors import EvalbenchError, innermost_evalbench_error, one_line


def _parsed(overrides: Sequence[str]) -> Iterator[Override]:
    """Each override as Hydra parses it; one Hydra cannot parse is left for Hydra to report."""
    parser = OverridesParser.create()
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except Exception:  # Hydra refuses it itself, with its own message
            continue
        yield override


def _last_override(overrides: Sequence[str], key: str) -> Override | None:
    """The override of ``key`` that Hydra applies: the last one given (Hydra merges them in order)."""
    found = None
    for override in _parsed(overrides):
        if override.key_or_group == key:
            found = override
    return found


def is_sweep(overrides: Sequence[str]) -> bool:
    """Whether any override sweeps a list of values (``precision=fp32,int8``)."""
    return any(override.is_sweep_override() for override in _parsed(overrides))


def override_value(overrides: Sequence[str], key: str, default: Any) -> Any:
    """The value Hydra gives ``key`` from ``overrides`` (the last one, parsed as Hydra parses it), else ``default``.

    A sweep (``key=a,b``) comes back as Hydra's sweep object, not a value.
    """
    override = _last_override(overrides, key)
    return default if override is None or override.is_delete() else override.value()


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` in the Hydra app being run or composed; empty when it is no group."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return []
    return GlobalHydra.instance().config_loader().get_group_options(group)


def check_one_option(overrides: Sequence[str]) -> None:
    """Refuse a config group given a list (``precision=[fp32,int8]``): Hydra would merge its options into one run."""
    for override in _parsed(overrides):
        if override.is_sweep_override() or override.is_delete() or not isinstance(override.value(), list):
            continue
        group, chosen = override.key_or_group, override.value()
        options = group_options(group)
        if options:
            raise EvalbenchError(
                f"{group}={override.get_value_element_as_str()} is a list, but a run takes one {group} (Hydra would "
                f"merge them into one); valid: {group}=<one of: {', '.join(options)}>, "
                f"or -m {group}={','.join(map(str, chosen))} to measure each"
            )


def _open_values(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[tuple[str, DictConfig | ListConfig, Any]]:
    """Each value under ``node`` left ``???`` or interpolated, as (full key, parent, key), found without resolving
    anything (Hydra's own node skipped)."""
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        path = f"{prefix}{key}"
        if path == "hydra":
            continue
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            yield path, node, key
        elif isinstance(child := node[key], DictConfig | ListConfig):
            yield from _open_values(child, f"{path}.")


def _choices(cfg: DictConfig) -> dict[str, Any]:
    """The option chosen in each config group: from the composed config, else from the running Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None and HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    return dict(choices or {})


def _unset(key: str, choices: dict[str, Any]) -> str:
    """A value left ``???``, as what was left out and what to give."""
    options = group_options(key.replace(".", "/"))
    if options:
        return f"{key} must be given; valid: {key}=<one of: {', '.join(options)}>"
    group = key.split(".")[0]
    by = f" for {group}={choices[group]}" if choices.get(group) else ""
    return f"{key} must be given{by} (it is ??? there); valid: {key}=<a value> on the command line"


def _required_by_resolver(node: DictConfig | ListConfig, key: Any) -> str | None:
    """The line of an ``${evalbench_required:...}`` this interpolation reaches; None when it resolves, or fails
    otherwise (an interpolation to a ``???`` is named at the ``???``; anything else is left to the run)."""
    try:
        node[key]
    except InterpolationResolutionError as exc:
        cause = innermost_evalbench_error(exc)
        return str(cause) if cause is not None else None
    return None


def _required(cfg: DictConfig) -> Iterator[str]:
    choices = _choices(cfg)
    for path, node, key in _open_values(cfg):
        if OmegaConf.is_missing(node, key):
            yield _unset(path, choices)
        elif (line := _required_by_resolver(node, key)) is not None:
            yield line


def check_required(cfg: DictConfig) -> None:
    """Refuse a value a chosen config group leaves unset (``???`` or ``${evalbench_required:...}``, or an
    interpolation to one), naming what to give."""
    lines = list(dict.fromkeys(_required(cfg)))  # an interpolation to an unset value repeats its line
    if lines:
        raise EvalbenchError("; ".join(lines))


def check_composed(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """What composing accepts but a run cannot: a group given a list, a required value left unset."""
    check_one_option(overrides)
    check_required(cfg)


def select_value(cfg: DictConfig, key: str, default: Any) -> Any:
    """``cfg``'s value at ``key``; ``default`` when it is unset, null or cannot be resolved (a record still needs
    a name)."""
    try:
        value = OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    except OmegaConfBaseException:  # e.g. an interpolation to a value left unset
        return default
    return default if value is None else value


def record_composition_failure(overrides: Sequence[str], exc: BaseException, defaults: Any) -> dict[str, Any]:
    """Write a failed record for ``overrides``; ``defaults`` is the config the overrides apply to."""
    from evalbench.environment import fingerprint
    from evalbench.results import write_record
    from evalbench.runner import new_record

    def given(key: str, default_key: str) -> Any:
        return override_value(overrides, key, select_value(defaults, default_key, "unknown"))

    base = OmegaConf.create(
        {
            "model": {"name": override_value(overrides, "model.name", given("model", "model.name"))},
            "backend": {"_target_": given("backend", "backend._target_")},
            "precision": {"_target_": given("precision", "precision._target_")},
            "pruning": {"_target_": given("pruning", "pruning._target_")},
            "threads": given("threads", "threads"),
            "batch_size": given("batch_size", "batch_size"),
        }
    )
    record = new_record(base)
    record.update(status="failed", error=one_line(exc), error_type=type(exc).__name__, overrides=list(overrides))
    record["env"] = fingerprint()
    results_dir = override_value(overrides, "results_dir", select_value(defaults, "results_dir", "results"))
    record["record_file"] = str(write_record(Path(to_absolute_path(str(results_dir))), record))
    return record
