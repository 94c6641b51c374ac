"""Every ``key=value`` override the README and docs quote composes with evalbench's configuration.

Commands in code blocks (``evalbench ...``, ``evalbench-report ...``) and overrides quoted inline
(``quality.reference=auto``) are composed with Hydra, each value of a swept list on its own;
a key the docs quote but the configuration does not have, or a group option it does not ship,
fails here instead of in a reader's shell. Deliberately bad inputs (``docs/errors.md``, and the
examples of a failing configuration below) are left out.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from evalbench.config import CONFIG_DIR, register_configs, validate

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "errors.md")]
BAD_ON_PURPOSE = {"precision=int3"}  # the README's example of a configuration that cannot be composed
OVERRIDE = re.compile(r"^(?:\+{1,2}|~)?([a-z_][\w.@/]*)=(\S*)$")
INLINE = re.compile(r"`([a-z_][\w.@/]*=[^`\s]+)`")
PROGRAMS = {"evalbench": "config", "evalbench-report": "report"}


def _split_list(value: str) -> list[str]:
    """A swept ``a,b,c`` as its values; a bracketed or braced value, or a quoted one, as itself."""
    if value.startswith(("[", "{", "'", '"')) or "," not in value:
        return [value]
    return value.split(",")


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """``(config name, overrides)`` of every evalbench command in the page's code blocks."""
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" # ")[0], comments=False) if line.strip() else []
            while words and re.match(r"^[A-Z_]+=", words[0]):  # RAY_ADDRESS=... evalbench
                words.pop(0)
            if words[:3] == ["python", "-m", "evalbench"] or words[:3] == [".venv/bin/python", "-m", "evalbench"]:
                words = ["evalbench", *words[3:]]
            if words and words[0] in PROGRAMS:
                found.append((PROGRAMS[words[0]], [w for w in words[1:] if OVERRIDE.match(w)]))
    return found


def _quoted(text: str, name: str) -> list[str]:
    """Overrides quoted inline whose key configuration ``name`` has (not Python keywords or record fields)."""
    roots = {*_compose(name, []).keys(), *(("hydra", "hydra/launcher", "sweep") if name == "config" else ())}
    return [span for span in INLINE.findall(text) if span.split("=")[0].split(".")[0] in roots]


def _compose(name: str, overrides: list[str]):
    register_configs()
    import evalbench.report.cli  # noqa: F401  (registers the report's schema)

    hydra_keys = any(o.lstrip("+~").startswith("hydra") for o in overrides)
    with initialize_config_dir(str(CONFIG_DIR if name == "config" else CONFIG_DIR / "report"), version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=hydra_keys)


def _contexts(override: str) -> list[list[str]]:
    """What an inline override is quoted with: a launcher's or a backend's or precision's own keys need it chosen."""
    key = override.split("=")[0]
    if key.startswith("hydra.launcher."):
        return [["hydra/launcher=ray_cluster" if ".ray." in key else "hydra/launcher=slurm"]]
    if key.startswith(("backend.", "precision.")):
        return [[f"precision={p.stem}"] for p in sorted((CONFIG_DIR / "precision").glob("*.yaml"))]
    return [[]]


def _cases() -> list[tuple[str, str, list[str]]]:
    cases = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        where = page.relative_to(REPO).as_posix()
        for name, overrides in _commands(text):
            cases.append((where, name, overrides))
        inline = "report" if page.name == "recommendation.md" else "config"  # that page quotes the report's keys
        cases.extend((where, inline, [span]) for span in _quoted(text, inline))
    return cases


def _expanded(overrides: list[str]) -> list[list[str]]:
    """One override list per value of each swept key (the first value of the others)."""
    pairs = [OVERRIDE.match(o).groups() for o in overrides if o not in BAD_ON_PURPOSE]
    lists = [[f"{key}={value}" for value in _split_list(raw)] for key, raw in pairs]
    runs = [[values[0] for values in lists]]
    for i, values in enumerate(lists):
        runs.extend([*(v[0] for v in lists[:i]), value, *(v[0] for v in lists[i + 1 :])] for value in values[1:])
    return runs


CASES = _cases()


def test_every_page_that_quotes_a_command_or_an_override_is_checked():
    """The extraction misses no page: each page with an evalbench command line or an inline ``key=value`` has cases."""
    quoting = {
        page.relative_to(REPO).as_posix()
        for page in PAGES
        if re.search(r"^(?:evalbench|evalbench-report) ", page.read_text(encoding="utf-8"), re.M)
        or INLINE.search(page.read_text(encoding="utf-8"))
    }
    assert quoting and quoting == {where for where, _, _ in CASES}


@pytest.mark.parametrize(("where", "name", "overrides"), CASES, ids=[f"{w}:{' '.join(o)[:60]}" for w, _, o in CASES])
def test_every_quoted_override_composes(where, name, overrides):
    for run in _expanded(overrides):
        errors = []
        for context in _contexts(run[0]) if len(run) == 1 else [[]]:
            try:
                cfg = _compose(name, [*context, *run, *(["oversubscribe=true"] if name == "config" else [])])
                if name == "config":  # as on the docs' bigger machines: threads beyond this one's cores allowed
                    validate(cfg)
                break
            except Exception as exc:  # one context that takes it is enough
                errors.append(f"{context}: {exc}")
        else:
            pytest.fail(f"{where}: {' '.join(run)} does not compose: {errors[0]}")
