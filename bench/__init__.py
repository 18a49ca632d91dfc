"""Benchmarks of snapext against Nova's live snapshot (``tox -e bench``).

Measurements, never pass/fail tests: nothing here is collected by stestr.
``python -m bench --help`` lists the options; results go to
``bench/results/`` (Markdown table, PNG plot, JSON of raw samples).
"""
