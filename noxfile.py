"""The versions unnest claims, tested: ``nox -s tests-floor tests-latest``;
and the public-API fallbacks: ``nox -s tests-public``.

``tests-floor`` pins dask and distributed to the floor that setup.cfg
declares (read from there, so the two cannot drift) and runs the core suite;
``tests-latest`` takes the newest releases and runs the whole suite. Each
session builds a fresh virtualenv with the interpreter nox runs under.

``nox -s docs`` builds the documentation site with warnings as errors;
``nox -s sdist`` builds the sdist and the wheel, checks them with twine, and
runs a fast part of the tests in the unpacked sdist.
"""

import configparser
import re
import shutil
import tarfile
from pathlib import Path

import nox

nox.options.sessions = ["tests-floor", "tests-latest"]

ROOT = Path(__file__).parent

# Everything but the demo, notebook, benchmark and reliability runs: the
# walk, the engines, the decorators and the hand-off.
CORE = [
    "tests/test_traverse.py",
    "tests/test_models.py",
    "tests/test_graph.py",
    "tests/test_resolve.py",
    "tests/test_decorators.py",
    "tests/test_handoff.py",
    "tests/test_wait_local.py",
    "tests/test_wait_distributed.py",
    "tests/test_distributed.py",
]


def floor_pins() -> list[str]:
    """``dask==X``, ``distributed==Y``: the ``>=`` floors of setup.cfg's install_requires."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    pins = []
    for line in config["options"]["install_requires"].split("\n"):
        match = re.fullmatch(r"\s*(dask|distributed)>=([\w.]+)\s*", line)
        if match:
            pins.append(f"{match[1]}=={match[2]}")
    assert len(pins) == 2, f"no dask/distributed floors in setup.cfg: {pins}"
    return pins


@nox.session(name="tests-floor")
def tests_floor(session: nox.Session) -> None:
    """The core suite on the oldest dask and distributed unnest declares."""
    session.install("-e", ".[test]", *floor_pins())
    session.run("python", "-c", "import dask, distributed; print(dask.__version__)")
    session.run("python", "-m", "pytest", *CORE, *session.posargs)


@nox.session(name="tests-public", python=False)
def tests_public(session: nox.Session) -> None:
    """The core suite with every fast path into distributed's internals off.

    ``UNNEST_PUBLIC_ONLY=1`` makes unnest use distributed's public API only
    (see ``unnest/_distributed.py``): the results must be the same. Runs in
    the environment nox runs in (the package installed with its test extra).
    """
    tests = [*CORE, "tests/test_reference.py"]
    session.run("python", "-m", "pytest", *tests, *session.posargs, env={"UNNEST_PUBLIC_ONLY": "1"})


# The workflow engines unnest resolves the futures of (issue 20): installed in
# this session only, not in the `test` extra -- ray alone is a 60 MB wheel and
# prefect brings a server and ~100 packages, too much for every test run.
ENGINES = ["ray", "prefect>=3", "prefect-dask", "parsl"]


@nox.session(name="tests-engines")
def tests_engines(session: nox.Session) -> None:
    """Ray, Prefect (thread pool and DaskTaskRunner) and Parsl futures, for real.

    ``UNNEST_REQUIRE_ENGINES=1`` turns the tests' skips for a missing engine
    into failures: here they must all run.
    """
    session.install("-e", ".[test]", *ENGINES)
    tests = ["tests/test_engines.py", "tests/test_engines_docs.py", "tests/test_placeholders.py"]
    session.run(
        "python", "-m", "pytest", *tests, *session.posargs, env={"UNNEST_REQUIRE_ENGINES": "1"}
    )
    # The engines' benchmark, small: it runs (its figures are not checked here).
    session.run("python", "benchmarks/engines.py", "--quick")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, every warning an error (``-E``: every page read anew)."""
    session.install("-e", ".[docs]")
    out = "docs/_build/html"
    session.run("python", "-m", "sphinx", "-W", "--keep-going", "-E", "-b", "html", "docs", out)


# What a fast run of the sdist's own tests covers: its contents, the README and
# the docs' examples, the walk; -m "not slow" there.
SDIST_TESTS = ["tests/test_package.py", "tests/test_docs.py", "tests/test_traverse.py"]


@nox.session
def sdist(session: nox.Session) -> None:
    """The sdist as a user unpacks it: ``twine check``, ``pip install ".[test]"``, its tests.

    Built with ``python -m build`` (the wheel from the sdist), checked with
    ``twine check --strict``, unpacked in the session's temporary folder and
    installed with its test extra; then ``SDIST_TESTS`` run there, or the
    tests given after ``--``.
    """
    tmp = Path(session.create_tmp()).resolve()
    shutil.rmtree(tmp / "dist", ignore_errors=True)
    session.install("build", "twine")
    session.run("python", "-m", "build", "--outdir", str(tmp / "dist"), str(ROOT))
    session.run("python", "-m", "twine", "check", "--strict", *map(str, (tmp / "dist").iterdir()))
    (sdist_path,) = (tmp / "dist").glob("*.tar.gz")
    with tarfile.open(sdist_path) as tar:
        tar.extractall(tmp / "dist", filter="data")
    unpacked = tmp / "dist" / sdist_path.name.removesuffix(".tar.gz")
    session.install(f"{unpacked}[test]")
    session.chdir(unpacked)
    session.run("python", "-m", "pytest", *(session.posargs or [*SDIST_TESTS, "-m", "not slow"]))


@nox.session(name="tests-latest")
def tests_latest(session: nox.Session) -> None:
    """The whole suite on the newest dask and distributed."""
    session.install("--upgrade", "-e", ".[test]", "dask", "distributed")
    session.run("python", "-c", "import dask, distributed; print(dask.__version__)")
    session.run("python", "-m", "pytest", *session.posargs)
