"""Settings that arrive as text, through the one parser of text into a declared setting's type
(config.loading.parse_text): the API's multipart form fields (generation parameters) and the API server's
environment variables. Each type a setting may have (bool, Literal, int, float, Optional) on both paths, and every
refusal a one-line error naming the field as its sender spelled it (400 for a form field).

Today's per-request generation settings are ints and floats; `EveryType` adds one of each other type, as a
per-request setting of that type would be declared."""
import io
from typing import Literal, Optional

import pytest
from pydantic import Field

from config import ConfigError, GenerationSettings
from config.loading import Bool, Float, Int, settings
from inference import inputs
from inference.api_server import create_app
from inference.api_settings import ServerSettings, settings_from_env
from inference.backends import Document
from inference.summarizer import SummaryResult


@settings
class EveryType(GenerationSettings):
    greedy_only: Bool = Field(True, description="a bool")
    strategy: Literal["fit", "window"] = Field("fit", description="a Literal")
    window: Optional[Int] = Field(4, ge=1, description="an Optional int")


class Recorder:
    """A summarizer that records the settings each document is generated with."""
    name, model_type, device, engine, gguf = "recorder", "deepseek-ocr", "cpu", "torch", None

    def __init__(self):
        self.generation, self.received = EveryType(), []

    def prepare_text(self, text, max_pages=None):
        return Document(text=text)

    def summarize_documents(self, documents, settings):
        self.received += [settings] * len(documents)
        return [SummaryResult("s", 1, None, None, None, 0.0) for _ in documents]


@pytest.fixture()
def form(monkeypatch):
    """POST /summarize/file with form fields -> (status, the settings generated with, or the error line)."""
    monkeypatch.setattr(inputs, "GenerationSettings", EveryType)
    for name in ("greedy_only", "strategy", "window"):
        monkeypatch.setitem(inputs.GENERATION_PARAMS, name, name)
    model = Recorder()
    client = create_app(model, ServerSettings(batch_wait_ms=0)).test_client()

    def post(base: EveryType = EveryType(), **fields):
        model.generation = base  # the server's values, which the fields override
        answer = client.post("/summarize/file", data={"file": (io.BytesIO(b"A short note."), "a.txt"), **fields})
        return answer.status_code, model.received.pop() if answer.status_code == 200 else answer.json["error"]

    return post


@pytest.mark.parametrize("text, value", [("false", False), ("FALSE", False), ("0", False), ("no", False),
                                         ("Off", False), ("true", True), ("1", True), ("yes", True), ("ON", True)])
def test_form_bool(form, text, value):
    status, settings = form(EveryType(greedy_only=not value), greedy_only=text)
    assert status == 200 and settings.greedy_only is value


def test_form_literal_int_float_and_optional(form):
    status, settings = form(strategy="window", num_beams="3", temperature="0.5", window="")
    assert status == 200
    assert (settings.strategy, settings.num_beams, settings.temperature) == ("window", 3, 0.5)
    assert settings.window == 4  # empty: the server's value
    assert form(window="9")[1].window == 9


@pytest.mark.parametrize("field, text, error", [
    ("greedy_only", "maybe", "form field 'greedy_only' must be true or false (or 1/0, yes/no, on/off), got 'maybe'"),
    ("greedy_only", "", "form field 'greedy_only' must be true or false (or 1/0, yes/no, on/off), got ''"),
    ("strategy", "squash", "form field 'strategy' must be one of fit, window, got 'squash'"),
    ("num_beams", "2.5", "form field 'num_beams' must be an integer, got '2.5'"),
    ("max_new_tokens", "many", "form field 'max_new_tokens' must be an integer, got 'many'"),
    ("temperature", "warm", "form field 'temperature' must be a number, got 'warm'"),
    ("window", "wide", "form field 'window' must be an integer, got 'wide'"),
    ("window", "0", "'window': input should be greater than or equal to 1, got 0"),  # the declaration's bound
])
def test_form_refusals_are_400_naming_the_field(form, field, text, error):
    assert form(**{field: text}) == (400, error)


@settings
class EveryTypeServer:
    verbose: Bool = Field(False)
    mode: Literal["fit", "window"] = Field("fit")
    workers: Int = Field(2, ge=1)
    timeout: Float = Field(1.5, gt=0)
    label: Optional[Int] = Field(None)


def test_environment_every_type():
    read = settings_from_env(EveryTypeServer, {"VERBOSE": "Yes", "MODE": "window", "WORKERS": "8", "TIMEOUT": "2.5",
                                               "LABEL": "7"})
    assert read == EveryTypeServer(verbose=True, mode="window", workers=8, timeout=2.5, label=7)
    assert settings_from_env(EveryTypeServer, {"VERBOSE": "off", "LABEL": ""}) == EveryTypeServer()  # empty: default
    for text in ("false", "0", "no", "OFF"):
        assert settings_from_env(EveryTypeServer, {"VERBOSE": text}).verbose is False
    served = ServerSettings.from_env({"ENGINE": "llamacpp", "GGUF": "model-q8_0.gguf", "PORT": "6001",
                                      "REQUEST_TIMEOUT": "7.5", "DEVICE": ""})
    assert (served.load.engine, served.load.gguf, served.port, served.request_timeout) == (
        "llamacpp", "model-q8_0.gguf", 6001, 7.5)
    assert served.load.device is None


@pytest.mark.parametrize("environ, error", [
    ({"VERBOSE": "sometimes"}, "environment variable VERBOSE must be true or false (or 1/0, yes/no, on/off), "
                               "got 'sometimes'"),
    ({"MODE": "squash"}, "environment variable MODE must be one of fit, window, got 'squash'"),
    ({"WORKERS": "two"}, "environment variable WORKERS must be an integer, got 'two'"),
    ({"WORKERS": "0"}, "environment variable WORKERS: input should be greater than or equal to 1, got 0"),
    ({"TIMEOUT": "soon"}, "environment variable TIMEOUT must be a number, got 'soon'"),
    ({"LABEL": "x"}, "environment variable LABEL must be an integer, got 'x'"),
])
def test_environment_refusals_name_the_variable(environ, error):
    with pytest.raises(ConfigError) as refused:
        settings_from_env(EveryTypeServer, environ)
    assert str(refused.value) == error


@pytest.mark.parametrize("environ, error", [
    ({"ENGINE": "vllm"}, "environment variable ENGINE must be one of torch, llamacpp, got 'vllm'"),
    ({"PORT": "80.5"}, "environment variable PORT must be an integer, got '80.5'"),
    ({"REQUEST_TIMEOUT": "0"}, "environment variable REQUEST_TIMEOUT: input should be greater than 0, got 0.0"),
    # A check across two settings of the load block names both variables, never a config key or a flag.
    ({"GGUF": "model-q8_0.gguf"}, "environment variable GGUF names a file for the llamacpp engine, but environment "
                                  "variable ENGINE is 'torch'"),
])
def test_server_setting_errors_name_the_environment_variable(environ, error):
    with pytest.raises(ConfigError) as refused:
        ServerSettings.from_env(environ)
    assert str(refused.value) == error
