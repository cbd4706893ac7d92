"""The settings of each stage that is not training: what `prepare`, `generate` and `evaluate` take.

Each stage is a typed function of one of these (data.prepare_datasets.prepare, inference.generate.generate,
evaluation.evaluate.evaluate); its `python -m` command builds the same object from flags (config/cli.py), and
`config.cli.to_argv` turns an object back into that command, so the experiment runner can print the command of
every stage it runs. Training takes `TrainingConfig` (config/settings.py).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from config.geometry import DEFAULT_BACKBONE, PAGE_GEOMETRY, BackboneName
from config.loading import Bool, ConfigError, Int, Str, settings
from config.settings import GenerationSettings, LoadSettings, RenderConfig

POSITIONAL = {"positional": True}


@settings
class PrepareJob:
    """python -m data.prepare_datasets: a dataset as train/val/test JSONL files, optionally with page images."""

    source: Str = Field("bundled", description="hub dataset id (e.g. ccdv/cnn_dailymail), a local "
                        ".jsonl/.json/.csv/.parquet file, a directory of train/val/test files, or 'bundled' "
                        "(SciTLDR-A sample)", json_schema_extra=POSITIONAL)
    subset: Optional[Str] = Field(None, description="hub dataset configuration (e.g. 3.0.0 for ccdv/cnn_dailymail)")
    output_dir: Str = Field("prepared_data", description="where outputs go")
    text_field: Optional[Str] = Field(None, description="column holding the document (default: known for each "
                                      "source)")
    summary_field: Optional[Str] = Field(None, description="column holding the reference summary or list of "
                                         "references")
    max_samples: Optional[Int] = Field(None, ge=1, description="keep at most N records per split")
    seed: Int = Field(42, description="seed of the carved-out splits")
    generate_images: Bool = Field(False, description="render each document to page images")
    workers: Optional[Int] = Field(None, ge=1, description="rendering processes (default: CPU count)")
    render: RenderConfig = Field(default_factory=RenderConfig,
                                 json_schema_extra={"flatten": True, "group": "page images (with --generate-images)"})
    backbone: BackboneName = Field(DEFAULT_BACKBONE, description="the model whose page geometry counts each "
                                   "record's vision tokens and decoder positions (a small page: deepseek-ocr 100, "
                                   "deepseek-ocr-2 144)")

    def __post_init__(self) -> None:
        views = PAGE_GEOMETRY[self.backbone].views
        if self.render.mode not in views:
            raise ConfigError(f"config key 'mode' must be one of {', '.join(views)} for backbone {self.backbone}, "
                              f"got {self.render.mode!r}")


@settings
class GenerateJob:
    """python -m evaluation.generate: a summary for every record of a prepared JSONL file, resumable."""

    data_file: Str = Field(description="prepared JSONL (id, text, optional images)", json_schema_extra=POSITIONAL)
    model: Str = Field(description="model folder, hub id or preset (tiny-random)",
                       json_schema_extra={"flags": ["--model", "--model-name"], "metavar": "ID_OR_PATH"})
    output: Str = Field(description="predictions JSONL (appended to; resumable)", json_schema_extra={"metavar": "FILE"})
    overwrite: Bool = Field(False, description="start the output file afresh")
    max_samples: Optional[Int] = Field(None, ge=1, description="only the first N records")
    render_text: Bool = Field(False, description="render each record's text instead of reading its prepared images")
    load: LoadSettings = Field(default_factory=LoadSettings,
                               json_schema_extra={"flatten": True, "group": "model loading"})
    # The command's defaults are the model folder's saved settings, so a command that reproduces a run states them.
    generation: GenerationSettings = Field(default_factory=GenerationSettings, json_schema_extra={
        "flatten": True, "explicit": True, "group": "generation (defaults: the model folder's saved settings)"})


@settings
class EvaluateJob:
    """python -m evaluation.evaluate: ROUGE of predictions (and/or a baseline) against a prepared dataset."""

    references: Str = Field(description="prepared JSONL (id, text, summary, references, optional render)",
                            json_schema_extra=POSITIONAL)
    predictions: Optional[Str] = Field(None, description="JSONL of {id, prediction[, pages, vision_tokens, "
                                       "generated_tokens, seconds]}; may be omitted with --baseline",
                                       json_schema_extra=POSITIONAL)
    output: Str = Field("metrics.json", description="metrics JSON, written atomically",
                        json_schema_extra={"metavar": "JSON"})
    baseline: Optional[Literal["lead-3"]] = Field(None, description="also score an extractive baseline without a "
                                                  "model")
    per_example: Optional[Str] = Field(None, description="write per-example scores and document stats",
                                       json_schema_extra={"metavar": "JSONL"})
    plot: Optional[Str] = Field(None, description="plot ROUGE against compression ratio by document length",
                                json_schema_extra={"metavar": "PNG"})
    workers: Optional[Int] = Field(None, ge=1, description="scoring processes (default: all cores for 1000+ "
                                   "examples, else 1)")
    bootstrap: Int = Field(1000, ge=0, description="bootstrap resamples for the intervals, 0 for none")
    precision_recall: Bool = Field(False, description="also report precision and recall")
    seed: Int = Field(0, description="bootstrap seed")
