"""Test-suite settings: Hypothesis draws the same examples on every run.

CI must not turn red on an example nobody has seen before, so the default profile is
derandomised (and keeps no example database). Explore with fresh random examples locally with
``HYPOTHESIS_PROFILE=explore python -m pytest``, and turn what it finds into a fixed test.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
