"""The results table's reading and repetition columns: the evaluation's figures of each arm (metrics.json
`reading`, and `repetition` per system), with its definitions, and '-' where an arm has none (Lead-N reads
nothing; an evaluation may report no repetition)."""
from experiments.report import markdown

READING = {"documents": 2, "mean_windows": 1.5, "mean_levels": 1.5, "mean_pages": 40.0, "mean_pages_read": 40.0,
           "mean_share_read": 1.0, "truncated": 0, "strategies": {"hierarchical": 1, "direct": 1},
           "definition": "share read: as the evaluation says"}


def _results(rows, synthetic=False):
    return {"experiment": "e", "config": "c.json", "dataset": {"source": "s", "test_documents": 2,
                                                               "synthetic": synthetic},
            "machine": {"accelerator": "none", "cpus": 2}, "arms": rows, "stages": [], "total_stage_seconds": 0,
            "comment": []}


def _row(name, kind, read=None, repetition=None, **extra):
    return {"name": name, "type": kind, "reads": "r", "scores": dict.fromkeys(("rouge1", "rouge2", "rougeL",
                                                                                "rougeLsum"), 1.0),
            "intervals": None, "empty_predictions": 0, "documents": 2, "text_tokens": 10.0,
            "decoder_document_tokens": None, "compression_ratio": None, "train_seconds": None, "train_steps": None,
            "step_seconds": None, "val_losses": None, "generation_seconds": None, "reading": read,
            "repetition": repetition or {}, "truncated_documents": read["truncated"] if read else None, **extra}


def _cells(table: str, name: str) -> dict[str, str]:
    """The cells of arm `name`'s row of a results.md table, by column title."""
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    head = next(line for line in table.splitlines() if line.startswith("| arm |"))
    return dict(zip(head.strip("| ").split(" | "), line.strip("| ").split(" | ")))


def test_the_table_shows_pages_share_windows_and_repetition_per_arm():
    text = {**READING, "mean_windows": 1.0, "mean_pages": 0.0, "mean_pages_read": 0.0, "mean_share_read": 0.6512,
            "truncated": 1, "strategies": {"truncate": 1, "direct": 1}}
    repetition = {"loop_share": 0.5, "repeated_ngram_rate": 0.25, "definition": "loops: as the evaluation says"}
    table = markdown(_results([_row("pixels", "pixels", READING, repetition),
                               _row("text", "text", text, max_source_length=1024),
                               _row("lead-16", "lead")], synthetic=True))
    cells = _cells(table, "pixels")
    assert (cells["pages read"], cells["share read"], cells["windows"]) == ("40.0/40.0", "1.00", "1.5")
    assert (cells["loop share"], cells["rep-4"]) == ("0.50", "0.250")
    assert "read 1 hierarchical, 1 direct" in cells["reads"]
    cells = _cells(table, "text")
    assert (cells["pages read"], cells["share read"], cells["windows"]) == ("-", "0.65", "1.0")
    assert "1 docs cut to 1024 tokens" in cells["reads"] and (cells["loop share"], cells["rep-4"]) == ("-", "-")
    cells = _cells(table, "lead-16")
    assert [cells[c] for c in ("pages read", "share read", "windows", "loop share", "rep-4")] == ["-"] * 5
    # The evaluation's definitions, not the report's own.
    assert "share read: as the evaluation says" in table and "loops: as the evaluation says" in table
    assert "**synthetic** documents" in table


def test_an_evaluation_without_reading_or_repetition_leaves_the_cells_empty():
    table = markdown(_results([_row("pixels", "pixels"), _row("text", "text", max_source_length=1024)]))
    for name in ("pixels", "text"):
        cells = _cells(table, name)
        assert [cells[c] for c in ("pages read", "share read", "windows", "loop share", "rep-4")] == ["-"] * 5
        assert cells["reads"] == "r"
    assert "not reported by this evaluation" in table and "synthetic" not in table
