"""Bad model paths, GGUF files and data files fail with one line naming the value and what is valid."""

from __future__ import annotations

import time

import pytest
from omegaconf import OmegaConf

from evalbench.config import CONFIG_DIR, DatasetConfig, EvalbenchConfig, ModelConfig, validate
from evalbench.dataset.text import load_text
from evalbench.errors import EvalbenchError
from evalbench.isolation import measure_in_child
from evalbench.model.loader import load_config, load_model, load_tokenizer
from evalbench.model.source import resolve_source


def test_missing_local_path():
    with pytest.raises(EvalbenchError, match=r"model.path='/no/such/dir' does not exist; valid: a local directory"):
        resolve_source(ModelConfig(name="x", path="/no/such/dir"))


def test_hub_ids_pass_through_and_fail_offline(tmp_path):
    source = resolve_source(ModelConfig(name="x", path="nobody/no-such-model"))
    assert not source.is_local and source.location == "nobody/no-such-model"
    with pytest.raises(EvalbenchError, match=r"model.path='nobody/no-such-model' could not be loaded"):
        load_model(ModelConfig(name="x", path="nobody/no-such-model"), tmp_path)


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(EvalbenchError, match=r"model.path='.*' is not a model directory: it has no config.json; valid"):
        load_model(ModelConfig(name="x", path=str(tmp_path)), tmp_path / "cache")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(EvalbenchError, match=r"it holds GGUF files \['m.gguf'\]: name one as model.gguf_file"):
        load_model(ModelConfig(name="x", path=str(tmp_path)), tmp_path / "cache")


def _hang(cfg, record, results_dir) -> None:
    time.sleep(600)


def test_a_hung_measuring_process_is_killed_at_the_time_limit(tmp_path):
    record = {"status": "running"}
    started = time.perf_counter()
    measure_in_child(_hang, OmegaConf.create({"isolation": "process"}), record, tmp_path, timeout_s=2)
    assert time.perf_counter() - started < 60
    assert record["status"] == "failed" and record["error_type"] == "TimedOut"
    assert "still running after timeout_s=2 seconds and was killed" in record["error"]


def test_file_instead_of_directory(tmp_path):
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"")
    with pytest.raises(EvalbenchError, match=r"is a file; give its directory as model\.path"):
        resolve_source(ModelConfig(name="x", path=str(weights)))


def test_missing_package_names_install_command():
    config = ModelConfig(name="x", package="no_such_pkg_evalbench", install="pip install --no-deps no-such-pkg")
    with pytest.raises(EvalbenchError, match=r"'no_such_pkg_evalbench' is not installed; install it with: pip install"):
        resolve_source(config)


def test_missing_gguf_file_lists_those_present(tmp_path):
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(
        EvalbenchError, match=r"model.gguf_file='m.gguf' is not in .*GGUF files there: \['other.gguf'\]"
    ):
        resolve_source(ModelConfig(name="x", path=str(tmp_path), gguf_file="m.gguf"))


def test_unreadable_gguf(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"this is not a gguf file" * 100)
    config = ModelConfig(name="x", path=str(tmp_path), gguf_file="broken.gguf")
    with pytest.raises(EvalbenchError, match=r"broken.gguf' could not be read as GGUF"):
        load_model(config, tmp_path / "cache")
    leftovers = [p for p in (tmp_path / "cache" / "converted").iterdir() if p.suffix != ".lock"]
    assert not leftovers, "nothing half-written is cached"


def test_local_text_and_missing_file(tmp_path):
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_text(" = A = \n b \n")
    assert load_text(DatasetConfig(data_dir=str(tmp_path))).text == " = A = \n b \n"
    with pytest.raises(EvalbenchError, match=r"dataset file .*nothing.raw' not found"):
        load_text(DatasetConfig(data_dir=str(tmp_path), local_file="nothing.raw"))


def test_offline_without_local_data(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(EvalbenchError, match="needs local files while offline: set EVALBENCH_DATA_DIR"):
        load_text(DatasetConfig(data_dir=None))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("threads", 0, "threads=0 is invalid; valid: an integer >= 1"),
        ("threads", 4096, r"threads=4096 is more than this machine's \d+ logical cores, .* \(oversubscribe=true"),
        ("timeout_s", 0, r"timeout_s=0.0 is invalid; valid: a number of seconds > 0"),
        ("batch_size", -1, "batch_size=-1 is invalid; valid: an integer >= 1"),
        ("isolation", "threads", r"isolation=threads is invalid; valid: none \(in-process, model reused\) or process"),
        ("perplexity.max_tokens", 1, "perplexity.max_tokens=1 is invalid; valid: 0 or null"),
        ("perplexity.stride", 2048, r"perplexity.stride=2048 is invalid; valid: null or 1..perplexity.context"),
        ("speed.new_tokens", 1, "speed.new_tokens=1 is invalid; valid: an integer >= 2"),
        (
            "speed.prompt_tokens",
            [],
            r"speed.prompt_tokens=\[\] is invalid; valid: an integer >= 1, or a list",
        ),
        ("speed.prompt_tokens", [8, "x"], r"speed.prompt_tokens=\[8, 'x'\] is invalid; valid: an integer >= 1"),
        ("speed.prompt_tokens", [64, 0], r"speed.prompt_tokens=\[64, 0\] is invalid; valid: an integer >= 1"),
        ("speed.max_cv", -0.1, "speed.max_cv=-0.1 is invalid; valid: a number >= 0"),
        ("speed.max_time_s", -1.0, "speed.max_time_s=-1.0 is invalid; valid: a number >= 0"),
        ("quality.reference", "fp16", r"quality.reference=fp16 is invalid; valid: auto \(the model's own"),
        ("quality.top_k", 0, "quality.top_k=0 is invalid; valid: an integer >= 1"),
        ("quality.tail_samples", -1, "quality.tail_samples=-1 is invalid; valid: an integer >= 0"),
        ("quality.limit", 0, r"quality.limit=0 is invalid; valid: null \(every example\) or an integer >= 1"),
        ("quality.batch_size", 0, "quality.batch_size=0 is invalid; valid: an integer >= 1"),
        ("quality.bootstrap_iters", -1, "quality.bootstrap_iters=-1 is invalid; valid: an integer >= 0"),
    ],
)
def test_config_values_are_validated_with_one_line(key, value, message):
    cfg = OmegaConf.structured(EvalbenchConfig)
    OmegaConf.update(cfg, key, value)
    with pytest.raises(EvalbenchError, match=message):
        validate(cfg)


def test_oversubscription_is_allowed_when_asked_for():
    cfg = OmegaConf.structured(EvalbenchConfig)
    OmegaConf.update(cfg, "threads", 4096)
    OmegaConf.update(cfg, "oversubscribe", True)
    validate(cfg)  # no error


def test_a_data_file_in_another_encoding_is_one_line_naming_it(tmp_path):
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_bytes(" = Café = \n".encode("latin-1"))
    with pytest.raises(EvalbenchError) as caught:
        load_text(DatasetConfig(data_dir=str(tmp_path)))
    assert str(caught.value) == (
        f"dataset file '{tmp_path / 'wikitext-2-raw' / 'wiki.test.raw'}' is not UTF-8 text (byte 0xe9 at offset 6: "
        "invalid continuation byte); valid: a UTF-8 text file, e.g. converted with iconv -f <its encoding> -t utf-8"
    )


def test_a_task_data_file_in_another_encoding_is_refused_before_lm_eval_reads_it(tmp_path):
    from evalbench.quality.tasks import resolve_tasks

    (tmp_path / "lambada_openai").mkdir()
    (tmp_path / "lambada_openai" / "lambada_test.jsonl").write_bytes('{"text": "Café"}\n'.encode("utf-16"))
    record: dict = {}
    quality = OmegaConf.create({"tasks": ["lambada_openai"], "data_dir": str(tmp_path)})
    assert resolve_tasks(quality, record) == []
    assert record["quality_errors"] == [
        f"quality.tasks: lambada_openai data file '{tmp_path / 'lambada_openai' / 'lambada_test.jsonl'}' is not "
        "UTF-8 text (byte 0xff at offset 0: invalid start byte); valid: a UTF-8 text file, e.g. converted with "
        "iconv -f <its encoding> -t utf-8"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("min_decode_tokens_per_s", "20tok/s", r"no unit; valid: min_decode_tokens_per_s=20 \(tokens per second\)$"),
        ("max_memory_bytes", "2GiB", r"targets take no unit; valid: max_memory_bytes=2147483648 \(bytes\)$"),
        ("max_memory_bytes", "1.5 GB", r"targets take no unit; valid: max_memory_bytes=1500000000 \(bytes\)$"),
        ("max_ttft_s", "500ms", r"targets take no unit; valid: max_ttft_s=0.5 \(seconds\)$"),
        ("max_quality_loss", "1%", r"targets take no unit; valid: max_quality_loss=0.01 \(a fraction: 0.01 = 1%"),
        ("max_memory_bytes", "lots", r"max_memory_bytes=lots is invalid; valid: a number \(bytes\), or null"),
        ("max_quality_loss", None, r"max_quality_loss=null is invalid; valid: a number \(a fraction"),
        ("max_quality_loss", "0.05", r"max_quality_loss='0.05' is text; valid: max_quality_loss=0.05 \(a fraction"),
    ],
)
def test_a_report_target_with_a_unit_is_one_line_giving_the_plain_number(key, value, message):
    from evalbench.config import Targets

    with pytest.raises(EvalbenchError, match=message):
        Targets(**{key: value})
    cfg = OmegaConf.structured(EvalbenchConfig)  # evalbench's own report: refused before measuring
    OmegaConf.update(cfg, f"report.{key}", value)
    with pytest.raises(EvalbenchError, match=f"report.{key}="):
        validate(cfg)


def test_report_targets_given_as_numbers_are_numbers():
    from evalbench.config import Targets

    targets = Targets(max_quality_loss=0, min_decode_tokens_per_s=20, max_memory_bytes=2e9)
    assert (targets.max_quality_loss, targets.min_decode_tokens_per_s, targets.max_memory_bytes) == (0.0, 20.0, 2e9)
    assert targets.max_ttft_s is None and isinstance(targets.max_quality_loss, float)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["results_dir=a", "results_dir=b"], "b"),  # Hydra applies the last
        (["+results_dir=a", "threads=2", "results_dir='b c'"], "b c"),  # parsed as Hydra parses it
        (["threads=2"], "default"),
        (["results_dir=a", "~results_dir"], "default"),
    ],
)
def test_an_override_given_twice_is_read_as_hydra_reads_it(overrides, expected):
    from evalbench.composition import override_value

    assert override_value(overrides, "results_dir", "default") == expected


def test_a_gguf_sources_tokenizer_and_config_come_without_an_fp32_copy(tmp_path):
    """The tokens every backend is fed, and the model's shape, read from the GGUF's metadata: the FP32
    de-quantized checkpoint (torch's and the ONNX builder's) is not written for them."""
    from transformers import AutoTokenizer

    sample = OmegaConf.load(CONFIG_DIR / "model" / "smollm2-135m.yaml")
    tokenizer, source = load_tokenizer(sample, tmp_path / "cache")
    config = load_config(sample, tmp_path / "cache")
    written = sorted(p.name for p in (tmp_path / "cache" / "converted").iterdir() if p.suffix != ".lock")
    assert len(written) == 1 and written[0].endswith("-metadata")
    assert not list((tmp_path / "cache" / "converted" / written[0]).glob("*.safetensors"))
    direct = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    text = "The tower is 324 metres (1,063 ft) tall."
    assert tokenizer(text).input_ids == direct(text).input_ids and len(tokenizer) == 49152
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("llama", 576, 30)
