"""Every GenerationSettings field reaches the model from every entry point: the `evaluation.generate` command (its
flags, and the command `config.cli.to_argv` writes for the experiment runner), the infer CLI, and the API (JSON
body and multipart form). The fields are read from the declaration, so a field added there is walked here too.

Only the summarizer's generation call is replaced (to record the settings it is given); parsing is the real one.
"""
import dataclasses
import io
import json
import typing

import pytest

from config import GenerationSettings, LoadSettings, load_run_settings
from config.cli import to_argv
from config.jobs import GenerateJob
from config.loading import field_extra, field_type
from inference import generate, infer
from inference.api_server import create_app
from inference.api_settings import ServerSettings
from inference.summarizer import DeepSeekSummarizer, SummaryResult

FIELDS = [f.name for f in dataclasses.fields(GenerationSettings)]
PER_REQUEST = [name for name in FIELDS if field_extra(GenerationSettings, name).get("per_request", True)]
# A field's name in the reference README (max_length for max_new_tokens); its own name works everywhere too.
PUBLIC = {name: field_extra(GenerationSettings, name).get("public") or name for name in FIELDS}
SPELLINGS = {"own name": lambda name: name, "reference name": PUBLIC.get}


def other_value(name: str, value):
    """A valid value of field `name` that differs from `value`."""
    kind = field_type(GenerationSettings, name)
    if kind is bool:
        return not value
    if typing.get_origin(kind) is typing.Literal:
        return next(choice for choice in typing.get_args(kind) if choice != value)
    return value + 1 if kind is int else value + 0.5


@pytest.fixture()
def saved(tiny_model_dir):
    return load_run_settings(tiny_model_dir)[1]


@pytest.fixture()
def wanted(saved):
    """Every field away from the model folder's saved value (its starting point everywhere) and its default."""
    values = {name: other_value(name, getattr(saved, name)) for name in FIELDS}
    values = {name: other_value(name, v) if v == getattr(GenerationSettings(), name) else v
              for name, v in values.items()}
    return GenerationSettings(**values)  # also checks each value is valid


@pytest.fixture()
def received(monkeypatch, summarizer):
    """The settings each generation call is given; loading returns the session's tiny summarizer."""
    calls = []

    def summarize_documents(documents, settings=None):
        calls.append(settings)
        return [SummaryResult("stub", 1, 64, 1, None, 0.0) for _ in documents]

    monkeypatch.setattr(summarizer, "summarize_documents", summarize_documents)
    monkeypatch.setattr(DeepSeekSummarizer, "from_pretrained", staticmethod(lambda name, load=None: summarizer))
    return calls


def flags(settings: GenerationSettings, names, spell) -> list[str]:
    """Hand-spelled flags (not to_argv's) giving each named field its value in `settings`."""
    argv = []
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool):
            argv.append(spell(name) if value else spell(f"no_{name}"))
        else:
            argv += [spell(name), str(value)]
    return argv


def test_wanted_values_differ_everywhere(saved, wanted):
    assert all(getattr(wanted, n) not in (getattr(saved, n), getattr(GenerationSettings(), n)) for n in FIELDS)


def test_generate_command_flags(tiny_model_dir, tmp_path, wanted, received):
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"id": "a", "text": "A short document about rivers."}) + "\n")
    argv = [str(data), "--model", str(tiny_model_dir), "--output", str(tmp_path / "p.jsonl"),
            *flags(wanted, FIELDS, lambda name: "--" + name.replace("_", "-"))]
    assert generate.main(argv) == 0
    assert received == [wanted]


def test_generate_command_written_by_to_argv(tiny_model_dir, tmp_path, wanted, received):
    """The experiment runner's printed command (to_argv of its GenerateJob) is the job it runs."""
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"id": "a", "text": "A short document about rivers."}) + "\n")
    job = GenerateJob(data_file=str(data), model=str(tiny_model_dir), output=str(tmp_path / "p.jsonl"),
                      load=LoadSettings(device="cpu"), generation=wanted)
    argv = to_argv(job)
    assert generate.job_from_args(generate.build_parser().parse_args(argv)) == job
    assert generate.main(argv) == 0
    assert received == [wanted]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_infer_flags(tiny_model_dir, tmp_path, wanted, received, capsys, spelling):
    article = tmp_path / "article.txt"
    article.write_text("A short document about rivers.")
    # The infer CLI's reference spelling: underscores, and the reference name where there is one (--max_length).
    argv = ["--model_path", str(tiny_model_dir), "--input_file", str(article),
            *flags(wanted, FIELDS, lambda name: "--" + SPELLINGS[spelling](name))]
    assert infer.main(argv) == 0
    assert received == [wanted]


def _api(summarizer):
    return create_app(summarizer, ServerSettings(batch_wait_ms=0)).test_client()


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_api_json_and_form(summarizer, saved, wanted, received, spelling):
    client = _api(summarizer)
    params = {SPELLINGS[spelling](name): getattr(wanted, name) for name in PER_REQUEST}
    response = client.post("/summarize/text", json={"text": "A short document about rivers.", **params})
    assert response.status_code == 200, response.json
    form = {"file": (io.BytesIO(b"A short document about rivers."), "doc.txt"),
            **{key: str(value) for key, value in params.items()}}
    response = client.post("/summarize/file", data=form, content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    # Per-request fields come from the request; the others stay the server's (batch size: the batcher's group).
    expected = dataclasses.replace(saved, **{name: getattr(wanted, name) for name in PER_REQUEST}, batch_size=1)
    assert received == [expected, expected]


@pytest.mark.parametrize("name", [n for n in FIELDS if n not in PER_REQUEST])
def test_api_refuses_settings_that_are_not_per_request(summarizer, wanted, received, name):
    client = _api(summarizer)
    value = getattr(wanted, name)
    response = client.post("/summarize/text", json={"text": "A short document.", name: value})
    assert response.status_code == 400 and f"unknown field '{name}'" in response.json["error"]
    form = {"file": (io.BytesIO(b"A short document."), "doc.txt"), name: str(value)}
    response = client.post("/summarize/file", data=form, content_type="multipart/form-data")
    assert response.status_code == 400 and f"unknown form field '{name}'" in response.json["error"]
    assert received == []
