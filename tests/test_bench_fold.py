"""python -m labkit.bench.fold: measures both folds, without and with a tap."""
import pytest

from labkit.bench import fold

pytestmark = pytest.mark.timeout(120)


def test_the_fold_bench_prints_both_folds_with_and_without_a_tap(capsys):
    assert fold.main(["--records", "20000", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "ns" not in line and "x" in line[-2:]]
    assert [r.split("  ")[0] for r in rows] == [
        "C (lk_fold.c)", "one by one (reference)", "C (lk_fold.c), tapped",
        "one by one (reference), tapped"]
    assert all(float(r.split()[-1].rstrip("x")) > 0 for r in rows)


def test_the_fold_bench_checks_its_arguments():
    with pytest.raises(SystemExit):
        fold.main(["--records", "10"])
