"""Generation over two CPU processes (torchrun, gloo): the same predictions, in the same order, as one process;
a two-process run killed midway resumes to the same file, generating only what its parts do not hold; a bad input
is reported once."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from inference.distributed import discard_predictions, part_files
from inference.generate import main

REPO = Path(__file__).resolve().parents[2]
N_RECORDS = 8


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    rows = [json.loads(line) for line in (REPO / "data/bundled/scitldr-a/test.jsonl").open()][:N_RECORDS]
    path = tmp_path_factory.mktemp("gen2") / "test.jsonl"
    path.write_text("".join(json.dumps({"id": r["paper_id"], "text": " ".join(r["source"])}) + "\n" for r in rows))
    return path


def _args(data_file, model, output):
    return [str(data_file), "--model", str(model), "--output", str(output), "--device", "cpu",
            "--max-new-tokens", "6", "--batch-size", "1"]


def _generated(stdout):
    """Predictions each process reports writing: (count, file) per process that generated any."""
    return [(int(count), name) for count, name in re.findall(r"wrote (\d+) predictions to (\S+)", stdout)]


def _untimed(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process_run(tiny_model_dir, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "pred.jsonl"
    assert main(_args(data_file, tiny_model_dir, out)) == 0
    return out


@pytest.fixture(scope="module")
def one_process(one_process_run):
    return _untimed(one_process_run)


def _killed_run_settings(one_process_run, out):
    """The settings file a killed run of the same command leaves beside its parts (written before any line)."""
    shutil.copy(one_process_run.with_name("pred.jsonl.settings.json"), out.with_name("pred.jsonl.settings.json"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_processes(args):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "evaluation.generate", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return command, env


@pytest.mark.slow  # two processes under torchrun
def test_two_processes_give_the_one_process_predictions(tiny_model_dir, data_file, one_process, tmp_path):
    out = tmp_path / "pred.jsonl"
    command, env = _two_processes(_args(data_file, tiny_model_dir, out))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _untimed(out) == one_process
    # Both processes generated a share, and only the merged file is left.
    assert "part-000-of-002" in result.stdout and "part-001-of-002" in result.stdout
    assert result.stdout.count("merged the parts of 2 processes") == 1
    assert part_files(out) == [] and (tmp_path / "pred.jsonl.settings.json").is_file()


@pytest.mark.slow  # two processes under torchrun, killed and rerun
def test_a_killed_two_process_run_resumes(tiny_model_dir, data_file, one_process, tmp_path):
    out = tmp_path / "pred.jsonl"
    command, env = _two_processes(_args(data_file, tiny_model_dir, out))
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not any(p.stat().st_size for p in part_files(out)) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The launcher and both workers at once, mid-generation, as a crash or a preempted machine would (the
    # workers run in sessions of their own, so the launcher's process group does not reach them).
    launcher = psutil.Process(run.pid)
    processes = [*launcher.children(recursive=True), launcher]
    for process in processes:
        process.kill()
    psutil.wait_procs(processes, timeout=30)
    run.wait()
    written = sum(len(p.read_text().splitlines()) for p in part_files(out))
    assert 0 < written < N_RECORDS, "the run must be killed with part of the work done"
    assert not out.exists() or len(_untimed(out)) < N_RECORDS
    result = subprocess.run(_two_processes(_args(data_file, tiny_model_dir, out))[0], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each process reports the finished records it skipped (those the killed run had written) and generates
    # only the rest: the merge would hide a record generated twice, the counts do not.
    assert result.stdout.count(f"({written} already done)") == 2
    assert sum(count for count, _ in _generated(result.stdout)) == N_RECORDS - written
    assert _untimed(out) == one_process and part_files(out) == []


@pytest.mark.slow  # two processes under torchrun, twice
def test_two_processes_resume_from_parts_and_generate_only_the_rest(tiny_model_dir, data_file, one_process,
                                                                      one_process_run, tmp_path):
    out = tmp_path / "pred.jsonl"
    lines = [json.dumps(row) + "\n" for row in one_process]
    _killed_run_settings(one_process_run, out)
    # As a killed three-process run leaves them: records 0, 1, 2 and 4 in its parts, and a line cut short.
    (tmp_path / "pred.jsonl.part-000-of-003").write_text(lines[0])
    (tmp_path / "pred.jsonl.part-001-of-003").write_text(lines[1] + lines[4])
    (tmp_path / "pred.jsonl.part-002-of-003").write_text(lines[2] + '{"id": "cut-off", "predic')
    command, env = _two_processes(_args(data_file, tiny_model_dir, out))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # The remaining records 3, 5, 6, 7 are dealt out in turn: two to each process, each generated once.
    assert sorted(_generated(result.stdout)) == [(2, str(out) + ".part-000-of-002"),
                                                 (2, str(out) + ".part-001-of-002")]
    assert _untimed(out) == one_process and part_files(out) == []
    # Run again once finished: nothing is generated, merged or claimed to be.
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"nothing to do: all {N_RECORDS} records" in result.stdout
    assert "merged" not in result.stdout and _generated(result.stdout) == []
    assert _untimed(out) == one_process


@pytest.mark.slow  # two processes under torchrun
def test_a_bad_input_under_torchrun_is_reported_once(tiny_model_dir, tmp_path):
    """Every process checks the inputs before the processes meet; only the first says what is wrong. torchrun
    itself ends any failed run with its own report and status 1, whatever status its workers had: here 2."""
    missing = tmp_path / "absent.jsonl"
    command, env = _two_processes(_args(missing, tiny_model_dir, tmp_path / "pred.jsonl"))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count(f"error: data file not found: {missing}") == 1, result.stderr[-3000:]
    # torchrun's report: a worker ended with status 2 (the other with 2 too, or stopped by torchrun: SIGTERM).
    statuses = re.findall(r"exitcode\s*:\s*(-?\d+)", result.stderr)
    assert "2" in statuses and set(statuses) <= {"2", "-15"}, result.stderr[-3000:]
    assert "Traceback" not in result.stderr.split("error: data file not found")[0]  # no worker traceback


def test_one_process_resumes_the_parts_of_a_multi_process_run(tiny_model_dir, data_file, one_process,
                                                                one_process_run, tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    lines = [json.dumps(row) + "\n" for row in one_process]
    _killed_run_settings(one_process_run, out)
    # As a killed two-process run leaves them: records 0 and 2 in rank 0's part, 1 in rank 1's plus a cut line.
    (tmp_path / "pred.jsonl.part-000-of-002").write_text(lines[0] + lines[2])
    (tmp_path / "pred.jsonl.part-001-of-002").write_text(lines[1] + '{"id": "cut-off", "predic')
    assert main(_args(data_file, tiny_model_dir, out)) == 0
    assert "(3 already done)" in capsys.readouterr().out
    assert _untimed(out) == one_process and part_files(out) == []


def test_overwrite_drops_the_parts_too(tmp_path):
    out = tmp_path / "pred.jsonl"
    out.write_text('{"id": "a", "prediction": "old"}\n')
    (tmp_path / "pred.jsonl.part-001-of-003").write_text('{"id": "b", "prediction": "old"}\n')
    discard_predictions(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow  # one and two processes under torchrun, on the other backbone
def test_two_processes_give_the_one_process_predictions_on_deepseek_ocr2(data_file, tmp_path):
    one, two = tmp_path / "one" / "pred.jsonl", tmp_path / "two" / "pred.jsonl"
    one.parent.mkdir()
    two.parent.mkdir()
    assert main(_args(data_file, "tiny-random-ocr2", one)) == 0
    command, env = _two_processes(_args(data_file, "tiny-random-ocr2", two))
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _untimed(two) == _untimed(one) and len(_untimed(one)) == N_RECORDS
    assert {line["vision_tokens"] / line["pages"] for line in _untimed(one)} == {144}  # its 768 view of small pages
