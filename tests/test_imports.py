"""What importing amtlib costs: a worker process imports it at every start."""

from __future__ import annotations

import subprocess
import sys


def test_a_worker_process_does_not_import_the_strategies_or_scipy():
    # Importing the strategies (scipy.optimize, scipy.stats) took ~1 s of each worker's start,
    # which runs training jobs only.
    code = (
        "import sys, amtlib._worker\n"
        "heavy = [m for m in ('amtlib.tuner', 'amtlib.strategies', 'scipy.optimize',"
        " 'scipy.stats') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_tuner_is_still_importable_from_the_package():
    import amtlib
    from amtlib import ScalingWarning, Tuner

    assert Tuner.__module__ == "amtlib.tuner" and issubclass(ScalingWarning, Warning)
    assert {"Tuner", "ScalingWarning"} <= set(dir(amtlib)) and "Tuner" in amtlib.__all__
