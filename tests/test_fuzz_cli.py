"""`gradpath run` under random options: never a traceback, always a documented exit code.

Each example draws a problem and a mix of valid and invalid options (sizes huge, negative or not
numbers, unknown names, --param with unknown keys and bad values) and runs the command in this
process. Whatever it is given, the command ends with one of the README's exit codes: 0 with a
complete record and a finite error, 1 with a diverged record, 2 with one line on stderr and no
run directory, or 3 (memory ran out) with a failed record. An exception escaping ``main`` is a
traceback, and fails the example. Valid runs are tiny (at most 3 steps of a net of width <= 6),
so that the file takes about a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gradpath.suite.cli.commands import EXIT_FAILED, EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_USAGE, main
from gradpath.suite.runs.record import SUMMARY

PROBLEMS = ["helmholtz", "poisson1d", "klein-gordon", "cavity"]
PARAMETERS = {  # each problem's parameters, with values good and bad
    "helmholtz": {"a1": ["1", "2.5", "0", "-1", "1e300", "nan", "x"], "a2": ["1", "4", "0"], "k": ["1", "-3", "inf"]},
    "poisson1d": {"C": ["1", "4", "0", "1e-300", "1e200", "pi"]},
    "klein-gordon": {"k": ["3", "2", "0", "-1", "3.5", "5000"], "gamma": ["1", "0", "-2"], "alpha": ["-1", "1e400"]},
    "cavity": {"Re": ["100", "50", "0", "-100", "1e9"], "reference_n": ["16", "0", "7", "2048", "16.5"],
               "form": ["psi-p", "u-v-p", "psi"]},
}


def _mostly(valid: list[str], invalid: list[str]) -> st.SearchStrategy[str]:
    """A value that is valid about three times in four: most examples should get as far as training."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(invalid))


def _sizes(valid: list[int]) -> st.SearchStrategy[str]:
    """A size option's value: usually small and valid, else zero, negative, huge or not an integer."""
    return _mostly([str(v) for v in valid], ["0", "-1", "99999999999999999999999", "1000001", "3.5", "x", "1e3", ""])


OPTIONS: dict[str, st.SearchStrategy[str]] = {
    "--method": _mostly(["M1", "M2", "M3", "M4"], ["M5", "m1", ""]),
    "--backend": _mostly(["jax", "torch"], ["tensorflow", "JAX"]),
    "--seed": _mostly(["0", "1", "7", "99999999999999999999999"], ["-1", "one", "1.5"]),
    "--width": _sizes([2, 4, 6]),
    "--depth": _sizes([1, 2]),
    "--batch-size": st.one_of(_sizes([1, 3, 8]), st.just("50000000")),  # the last: too large for memory
    "--iterations": _sizes([1, 2, 3]),
    "--log-every": _sizes([1, 2]),
    "--lr": _mostly(["1e-3", "0.1", "1e300"], ["0", "-1", "nan", "inf", "fast"]),
    "--lr-decay-rate": _mostly(["0.9", "1", "2"], ["0", "-1"]),
    "--lr-decay-steps": _sizes([1, 1000]),
    "--anneal-every": _sizes([1, 2]),
    "--anneal-alpha": _mostly(["0.5", "1"], ["0", "2", "-0.1"]),
    "--weighting": _mostly(["code", "paper", "code-cavity"], ["bogus"]),
    "--gate": _mostly(["code", "paper"], ["papr"]),
    "--adam-form": _mostly(["standard", "tf1"], ["tf2"]),
    "--adam-eps": _mostly(["1e-8", "1"], ["0", "-1"]),
    "--dtype": _mostly(["float32", "float64"], ["float16"]),
    "--device": _mostly(["auto", "cpu"], ["cuda", "gpu"]),  # cuda: a usage error where there is no GPU
    "--gradient-every": _mostly(["0", "1", "2"], ["-1", "x"]),
    "--checkpoint-every": _mostly(["0", "0.001"], ["-1", "nan", "x"]),
    "--form": _mostly(["psi-p", "u-v-p"], ["psi"]),
}


@st.composite
def run_commands(draw) -> list[str]:
    """The arguments of one `gradpath run` (without --out)."""
    problem = draw(_mostly(PROBLEMS, ["helmholz", "", "Helmholtz"]))
    argv = ["run", problem, "--quiet", "--no-compile"]  # torch's compile takes minutes; the maths is the same
    # tiny defaults first: an option drawn below replaces them (argparse keeps the last value)
    argv += ["--iterations", "2", "--log-every", "1", "--width", "4", "--depth", "1", "--batch-size", "4"]
    if problem == "cavity":
        argv += ["--param", "reference_n=16"]  # a reference solved in a second; n = 256 is the default
    for option in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=4, unique=True)):
        argv += [option, draw(OPTIONS[option])]
    known = PARAMETERS.get(problem, {})
    for _ in range(draw(st.integers(0, 2))):
        key = draw(_mostly(list(known), ["zz", "a2", ""])) if known else draw(st.sampled_from(["zz", "a2"]))
        value = draw(st.sampled_from(known[key])) if key in known else draw(st.sampled_from(["1", "x"]))
        argv += ["--param", draw(_mostly([f"{key}={value}"], [key, f"={value}"]))]
    return argv


def _run_dirs(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(argv=run_commands())
def test_gradpath_run_ends_with_a_documented_exit_code(argv):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([*argv, "--out", str(out)])  # an exception here is a traceback: a failure
        err = err.getvalue()
        event(f"exit {code}")  # pytest --hypothesis-show-statistics: how the examples ended
        assert "Traceback" not in err, err
        runs = _run_dirs(out)
        if code == EXIT_USAGE:
            assert err.startswith("gradpath: error: ") and err.count("\n") == 1, err
            assert not runs, f"a refused run left {runs}"
            return
        assert code in (EXIT_OK, EXIT_FAILED, EXIT_OUT_OF_MEMORY), (code, err)
        (run,) = runs
        summary = json.loads((run / SUMMARY).read_text())
        expected = {EXIT_OK: "complete", EXIT_FAILED: "diverged", EXIT_OUT_OF_MEMORY: "failed"}[code]
        assert summary["status"] == expected, summary
        if code == EXIT_OK:
            assert isinstance(summary["error"], float) and math.isfinite(summary["error"]), summary
            assert err == ""
