"""The demo (`python -m unnest`), the notebook and the benchmarks, run for real."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args, timeout):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_demo_prints_the_story_and_exits_0():
    result = run("-m", "unnest", timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(not 55)" in out and "Delayed(" in out  # the toy example going wrong
    assert "->  55" in out  # and right with resolves_nested
    assert "unnest.unwrap(top)  ->  {'depth': 2" in out
    assert "sleep-polling resolver" in out and "round trips" in out
    # The larger tree with a progress bar, finished; the branches streamed in
    # the order they finish, the shortest first.
    assert "156/156" in result.stderr.split("\r")[-1]
    streamed = [line.split("path ")[1].split()[0] for line in out.splitlines() if " path (" in line]
    assert streamed == ["('one", "('two", "('three"]


def test_demo_help_says_what_it_does():
    result = run("-m", "unnest", "--help", timeout=30)
    assert result.returncode == 0
    assert "--scheduler ADDRESS" in result.stdout and "sleep-polling" in result.stdout


@pytest.mark.slow
def test_demo_on_an_existing_cluster(cli_cluster):
    import json

    address = json.loads(Path(cli_cluster).read_text())["address"]
    result = run("-m", "unnest", "--scheduler", address, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "->  55" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_runs_clean_from_the_top():
    import nbclient
    import nbformat

    path = ROOT / "notebooks" / "futures_within_futures.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()  # raises CellExecutionError on any error
    outputs = "".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert "resolves_nested toy      -> 55" in outputs
    assert "deadlock" in outputs
    assert "as_resolved yields ('A', 0) -> done" in outputs and "unwrap: every branch" in outputs


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_benchmarks_quick_run_prints_the_table():
    result = run("benchmarks/run.py", "--quick", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| scenario | unnest | reference | ratio | target |" in result.stdout
    assert result.stdout.count("\n|") >= 11
