"""labkit.bench.switchcost: a switch taken apart, with median and spread; and
``python -m labkit bench`` printing no peer figure when the peer is missing.

No timing is asserted: only the shape of the report, the noise rule on
made-up samples, and counts (the busy hub polls far less than once a yield).
"""
import os
import subprocess
import sys

import pytest

from labkit.bench import switchcost
from labkit.bench.switchcost import Figure, SwitchCost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_figure_is_the_median_with_its_lowest_and_highest_round():
    figure = Figure((300.0, 100.0, 200.0))
    assert (figure.median, figure.low, figure.high) == (200.0, 100.0, 300.0)
    assert figure.spread == pytest.approx(1.0)


def _cost(spread_of_sleep0):
    steady = Figure((100.0, 101.0, 99.0))
    sleep0 = Figure((1000.0, 1000.0 * (1 + spread_of_sleep0), 1000.0))
    figures = {"greenlet switch": steady, "sleep(0)": sleep0,
               "sleep(0) traced": Figure((1100.0, 1100.0, 1101.0)), "poll": steady}
    breakdown = {"2 greenlet switches": Figure((200.0, 202.0, 198.0))}
    return SwitchCost(rounds=3, n=10, figures=figures, polls_per_yield=0.01,
                      breakdown=breakdown)


def test_the_noise_warning_appears_exactly_when_a_figure_spreads_wide():
    quiet, busy = _cost(0.05), _cost(0.5)
    assert quiet.noisy == [] and "NOISE WARNING" not in quiet.format()
    assert busy.noisy == ["sleep(0)"]
    text = busy.format()
    assert "NOISE WARNING" in text and "sleep(0) spread by up to 50%" in text


@pytest.mark.timeout(60)
def test_measure_reports_every_figure_and_the_breakdown_of_a_yield():
    cost = switchcost.measure(n=2000, rounds=3)
    assert list(cost.figures) == ["greenlet switch", "sleep(0)", "sleep(0) traced", "poll"]
    assert all(len(f.samples) == 3 and f.low > 0 for f in cost.figures.values())
    assert list(cost.breakdown) == ["2 greenlet switches", "the poll (its share)",
                                    "the hub's pass (the rest)",
                                    "the tracer (traced - untraced)"]
    # A busy hub polls at most every IO_CHECK_INTERVAL_NS, not every pass:
    # 4000 yields poll a few times, never once per yield.
    assert 0 < cost.polls_per_yield < 0.5
    # Round by round, the parts of an untraced yield add up to it.
    parts = ["2 greenlet switches", "the poll (its share)", "the hub's pass (the rest)"]
    for i in range(3):
        total = sum(cost.breakdown[p].samples[i] for p in parts)
        assert total == pytest.approx(cost.figures["sleep(0)"].samples[i])
    text = cost.format()
    assert "median of 3 rounds of 2000 operations" in text and "of an untraced yield" in text


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": "5"}, {"rounds": 0}, {"rounds": 1.5}])
def test_measure_refuses_bad_arguments_by_name(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        switchcost.measure(**kwargs)


@pytest.mark.timeout(120)
def test_bench_prints_no_gevent_figure_when_gevent_is_not_installed(tmp_path):
    # A sitecustomize that hides gevent from the driver and its workers, as
    # if it were not installed. greenlet_switch is measured once (labkit and
    # gevent switch with the same greenlet package); without gevent its
    # gevent column must read n/a, not labkit's figure.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['gevent'] = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    out = subprocess.run(
        [sys.executable, "-m", "labkit", "bench", "--quick", "--only", "greenlet_switch",
         "--peers", "gevent"], capture_output=True, text=True, env=env, timeout=100).stdout
    row = next(line for line in out.splitlines() if line.startswith("greenlet_switch"))
    assert row.split()[-2:] == ["n/a", "n/a"], out
    assert "same" not in row
