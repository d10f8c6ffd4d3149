"""README.rst and the docs: every python block runs as a script; the API page is whole.

A ``.. code-block:: python`` block is a complete program: copied into a file
and run with ``python file.py`` it must succeed. Each runs in a
subprocess of its own, in an empty folder, with the checkout's unnest.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import unnest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def python_blocks(path):
    """``(line, code)`` for each ``.. code-block:: python`` of an rst file."""
    lines = path.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for text in lines[i + 1 :]:
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            body.append(text)
        blocks.append((i + 1, textwrap.dedent("\n".join(body)).strip() + "\n"))
    return blocks


def blocks_of(*paths):
    return [
        pytest.param(code, id=f"{path.relative_to(ROOT)}:{line}")
        for path in paths
        for line, code in python_blocks(path)
    ]


def run_as_script(code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code)
    # The checkout's unnest, whatever an earlier install left in site-packages.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{code}\n{output}"
    assert result.stdout.strip(), f"printed nothing:\n{code}"
    return result.stdout


README_BLOCKS = blocks_of(ROOT / "README.rst")
DOCS_BLOCKS = blocks_of(*sorted(DOCS.glob("*.rst")))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("code", README_BLOCKS)
def test_readme_block_runs_as_a_script(code, tmp_path):
    run_as_script(code, tmp_path)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("code", DOCS_BLOCKS)
def test_docs_block_runs_as_a_script(code, tmp_path):
    run_as_script(code, tmp_path)


# Runs the docstring examples of every public name with the skips lifted: the
# lines marked `# doctest: +SKIP` need a cluster, and get one here (each
# docstring's own `Client()`, a multi-process LocalCluster). An example that
# needs a library that is not installed (an optional engine) is left out.
CLUSTER_DOCTESTS = """
import doctest

import distributed

import unnest


class Runner(doctest.DocTestRunner):
    missing = []

    def report_unexpected_exception(self, out, test, example, exc_info):
        if issubclass(exc_info[0], ModuleNotFoundError):
            self.missing.append(f"{test.name}: {exc_info[1]}")
            self.failures -= 1  # undone: run() counts it as a failure
            return
        super().report_unexpected_exception(out, test, example, exc_info)


if __name__ == "__main__":
    runner = Runner(optionflags=doctest.ELLIPSIS)
    for name in unnest.__all__:
        # __main__: functions defined in an example pickle by value, as in a script.
        for test in doctest.DocTestFinder(recurse=False).find(
            getattr(unnest, name), name, globs={"__name__": "__main__"}
        ):
            for example in test.examples:
                example.options.pop(doctest.SKIP, None)
            runner.run(test)
    for client in list(distributed.Client._instances):
        client.close()
    print("left out:", runner.missing)
    print(runner.summarize(verbose=False))
"""


@pytest.mark.timeout(300)
def test_docstring_examples_run_on_a_cluster(tmp_path):
    out = run_as_script(CLUSTER_DOCTESTS, tmp_path)
    assert "failed=0," in out, out


def test_the_problem_in_one_screen_is_the_problem(tmp_path):
    # The README's first block shows plain dask going wrong and unnest right.
    out = run_as_script(python_blocks(ROOT / "README.rst")[0][1], tmp_path)
    wrong, right = out.strip().splitlines()
    assert wrong.startswith("Delayed(") and right == "55"


def test_readme_is_a_landing_page():
    text = (ROOT / "README.rst").read_text()
    assert len(text.encode()) <= 10_000
    assert len(README_BLOCKS) >= 2
    # .ci/run runs the second `$ ` line of the Quick start as CI's test command.
    dollars = [m[1] for m in re.finditer(r"^\s+\$ (.+)$", text, re.M)]
    assert dollars[:2] == [
        'python -m pip install ".[progress]" && python -m unnest',
        'python -m pip install ".[test]" && python -m pytest',
    ]
    for page in re.findall(r"<(docs/[\w./-]+)>`_", text):
        assert (ROOT / page).exists(), page


def api_page_names():
    """The names that docs/api.rst documents, from its directives."""
    text = (DOCS / "api.rst").read_text()
    return set(re.findall(r"^\.\. (?:py:|auto)\w+:: (?:unnest\.)?(\w+)", text, re.M))


def test_api_page_documents_every_public_name():
    missing = sorted(set(unnest.__all__) - api_page_names())
    assert missing == [], f"add them to docs/api.rst: {missing}"


def test_every_docs_page_is_in_a_toctree():
    index = (DOCS / "index.rst").read_text()
    pages = {p.stem for p in DOCS.glob("*.rst")} - {"index"}
    assert {p for p in pages if f"\n   {p}\n" not in index} == set()
