"""Specification of ``python -m labkit bench`` (labkit/bench/).

The worker and the driver are tested with asyncio, which is always there;
assertions about gevent, uvloop and labkit itself apply when they import.
"""

import json
import os
import subprocess
import sys

import pytest

from labkit import bench
from labkit.bench import _worker, micro

pytestmark = pytest.mark.timeout(120)


def importable(impl):
    return _worker.unavailable_reason(impl) is None


def run_worker_command(*args):
    env = dict(os.environ, PYTHONPATH=str(bench.PROJECT_ROOT))
    proc = subprocess.run([sys.executable, "-m", "labkit.bench._worker", *args],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


# --- the worker ------------------------------------------------------------

@pytest.mark.parametrize("impl, bench_name", [
    ("asyncio", "sleep0"),
    ("asyncio", "threadsafe_wakeup"),
    ("labkit", "sleep0"),
    ("labkit", "threadsafe_wakeup"),
    ("labkit", "fresh_greenlet"),
    ("labkit", "patched_lock_contention"),
    ("labkit", "patched_lock_native_thread"),
    ("labkit", "ledger_fold_tapped"),
    ("original", "original_lock_native_thread"),
])
def test_worker_prints_one_json_line_with_a_positive_per_op_time(impl, bench_name):
    if not importable(impl):
        pytest.skip(f"{impl}: {_worker.unavailable_reason(impl)}")
    result = run_worker_command(impl, bench_name, "200", "2")
    assert result["status"] == "ok"
    assert (result["impl"], result["bench"]) == (impl, bench_name)
    assert (result["n"], result["repeats"]) == (200, 2)
    assert len(result["runs_s"]) == 2
    assert result["per_op_ns"] > 0


def test_worker_reports_a_missing_package_as_unavailable_not_as_an_error(monkeypatch):
    monkeypatch.setitem(_worker.REQUIREMENTS, "asyncio", ("labkit_no_such_module", ()))
    result = _worker.run("asyncio", "sleep0", 10, 1)
    assert result["status"] == "unavailable"
    assert "labkit_no_such_module" in result["reason"]


def test_peer_workers_run_without_labkits_arena_cache(monkeypatch):
    # Every worker imports labkit, which would otherwise install its frame-stack
    # block cache under gevent's greenlets too.
    cache_setting = {}

    def fake_run(command, env, **kwargs):
        cache_setting[command[3]] = env.get("LABKIT_ARENA_CACHE")
        return subprocess.CompletedProcess(command, 0, stdout='{"status": "ok"}\n', stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.delenv("LABKIT_ARENA_CACHE", raising=False)
    for impl in ("labkit", "gevent", "greenlet"):
        bench.run_worker(impl, "fresh_greenlet", 10, 1)
    assert cache_setting == {"labkit": None, "gevent": "0", "greenlet": "0"}


def test_every_benchmark_has_a_labkit_column_and_counts_operations():
    for name, benchmark in micro.BENCHMARKS.items():
        assert benchmark.name == name
        assert benchmark.ops_per_n >= 1 and benchmark.default_n >= 1
        labkit_impl = benchmark.aliases.get(micro.LABKIT, micro.LABKIT)
        assert labkit_impl in benchmark.impls, name


def test_greenlet_switch_is_measured_once_for_labkit_and_gevent():
    columns = [micro.LABKIT, *micro.PEERS]
    assert bench.impls_to_run(micro.BENCHMARKS["greenlet_switch"], columns) == ["greenlet"]
    assert bench.impls_to_run(micro.BENCHMARKS["sleep0"], columns) == columns


# --- the driver ------------------------------------------------------------

def test_quick_run_writes_json_with_meta_results_and_ratios(tmp_path, capsys):
    path = tmp_path / "bench.json"
    status = bench.main(["--quick", "--json", str(path), "--only", "sleep0"])
    assert status == 0
    document = json.loads(path.read_text(encoding="utf-8"))
    assert set(document) == {"meta", "results", "ratios"}
    assert document["meta"]["python"] and document["meta"]["quick"] is True
    assert list(document["results"]) == ["sleep0"]

    expected_n = micro.BENCHMARKS["sleep0"].default_n // bench.QUICK_DIVISOR
    measured = document["results"]["sleep0"]
    expected_impls = {impl for impl in (micro.LABKIT, *micro.PEERS) if importable(impl)}
    assert set(measured) == expected_impls
    for entry in measured.values():
        assert entry["per_op_ns"] > 0
        assert (entry["n"], entry["repeats"]) == (expected_n, 1)

    if importable(micro.LABKIT):
        ratios = document["ratios"]["sleep0"]
        assert set(ratios) == expected_impls - {micro.LABKIT}
        assert all(ratio > 0 for ratio in ratios.values())
        assert document["meta"]["labkit_backend"]

    out = capsys.readouterr().out
    assert "sleep0" in out and bench.RATIO_LEGEND in out


def test_unknown_only_name_is_an_error_that_names_it(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--quick", "--only", "sleep0,no_such_bench"])
    assert info.value.code == 2
    assert "no_such_bench" in capsys.readouterr().err


def test_unknown_peer_is_an_error_that_names_it(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--peers", "twisted"])
    assert "twisted" in capsys.readouterr().err


# --- formatting (pure functions) -------------------------------------------

FIXED_RESULTS = {
    "greenlet_switch": {"greenlet": {"per_op_ns": 95.0, "n": 10, "repeats": 1}},
    "sleep0": {
        "labkit": {"per_op_ns": 620.0, "n": 10, "repeats": 1},
        "gevent": {"per_op_ns": 1000.0, "n": 10, "repeats": 1},
        "asyncio": {"per_op_ns": 1500.0, "n": 10, "repeats": 1},
    },
}
FIXED_ALIASES = {"greenlet_switch": {"labkit": "greenlet", "gevent": "greenlet"}}


def test_format_table_shows_times_ratios_same_and_na():
    table = bench.format_table(FIXED_RESULTS, ["gevent", "asyncio", "uvloop"], FIXED_ALIASES)
    assert table == "\n".join([
        "benchmark         labkit   gevent  ratio  asyncio  ratio  uvloop  ratio",
        "greenlet_switch  95.0 ns  95.0 ns   same      n/a    n/a     n/a    n/a",
        "sleep0            620 ns   1.0 µs  0.62×   1.5 µs  0.41×     n/a    n/a",
    ])


def test_compute_ratios_is_labkit_over_peer_and_skips_shared_code():
    ratios = bench.compute_ratios(FIXED_RESULTS, ["gevent", "asyncio", "uvloop"],
                                  FIXED_ALIASES)
    assert ratios["greenlet_switch"] == {}
    assert ratios["sleep0"] == {"gevent": pytest.approx(0.62),
                                "asyncio": pytest.approx(620 / 1500)}


@pytest.mark.parametrize("ns, text", [
    (None, "n/a"), (87.34, "87.3 ns"), (999.0, "999 ns"), (12_400.0, "12.4 µs"),
    (1_234_000.0, "1.2 ms"), (1.5e9, "1.50 s"),
])
def test_format_duration_picks_a_readable_unit(ns, text):
    assert bench.format_duration(ns) == text


def test_callgrind_gate_fails_on_growth_past_the_limit_and_passes_within_it():
    from labkit.bench import callgrind
    before = {"sleep0": 1000.0, "event_roundtrip": 2000.0}
    lines, ok = callgrind.compare(before, {"sleep0": 1019.0, "event_roundtrip": 1900.0}, 2.0)
    assert ok and "+1.9%" in lines[1] and "-5.0%" in lines[2]
    lines, ok = callgrind.compare(before, {"sleep0": 1021.0, "socket_recv_wait": 5.0}, 2.0)
    assert not ok and "over the limit" in lines[1] and "new" in lines[2]


def test_callgrind_gate_counts_the_five_hot_paths_of_parking():
    from labkit.bench import callgrind, micro
    micro.load_suites()
    assert set(callgrind.GATE_BENCHMARKS) <= set(micro.BENCHMARKS)
    with pytest.raises(ValueError, match="unknown benchmark"):
        callgrind.instructions_per_op("no_such_benchmark")


def test_callgrind_reports_timers_and_mass_sleep_besides_the_gate():
    from labkit.bench import callgrind
    assert callgrind.DEFAULT_BENCHMARKS[:5] == callgrind.GATE_BENCHMARKS
    assert {"timer_cancel", "mass_sleep"} <= set(callgrind.DEFAULT_BENCHMARKS)


# --- issue 21: rounds, extras, rloop, --callgrind ----------------------------

def test_mass_sleep_reports_memory_per_parked_greenlet():
    if not importable(micro.LABKIT):
        pytest.skip("labkit is not built")
    result = run_worker_command("labkit", "mass_sleep", "300", "1")
    assert result["status"] == "ok" and result["per_op_ns"] > 0
    # every parked greenlet holds at least its greenlet, timer and stack slice
    assert result["extras"]["bytes_per_op"] > 0


def test_rounds_alternate_the_order_and_report_median_and_spread(monkeypatch):
    calls = []

    def fake_worker(impl, bench_name, n, repeats, timeout=None):
        calls.append(impl)
        ns = {"labkit": [100.0, 300.0, 200.0], "gevent": [400.0, 400.0, 400.0]}[impl]
        per_op = ns[sum(1 for c in calls if c == impl) - 1]
        return {"status": "ok", "impl": impl, "bench": bench_name, "n": n,
                "repeats": repeats, "per_op_ns": per_op,
                "extras": {"bytes_per_op": per_op * 10}}

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    args = bench.parse_args(["--only", "sleep0", "--peers", "gevent", "--rounds", "3"])
    results, outcomes = bench.run_all(args)
    assert calls == ["labkit", "gevent", "gevent", "labkit", "labkit", "gevent"]
    labkit = results["sleep0"]["labkit"]
    assert labkit["per_op_ns"] == 200.0 and labkit["rounds_ns"] == [100.0, 300.0, 200.0]
    assert labkit["spread"] == pytest.approx(1.0) and labkit["rounds"] == 3
    assert labkit["extras"] == {"bytes_per_op": 2000.0}
    table = bench.format_table(results, ["gevent"])
    assert "200 ns ±50%" in table and "400 ns ±0%" in table and "0.50×" in table
    assert "memory per op" in table and "2.0 KiB" in table


def test_rounds_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])
    assert "--rounds" in capsys.readouterr().err


def test_rloop_is_a_peer_of_every_loop_benchmark():
    assert "rloop" in micro.PEERS
    for name in ("sleep0", "timer_cancel", "spawn_join", "mass_sleep"):
        assert "rloop" in micro.BENCHMARKS[name].impls


def test_callgrind_table_shows_instructions_and_ratios():
    counts = {"timer_cancel": {"labkit": 10_000.0, "gevent": 20_000.0},
              "greenlet_switch": {"greenlet": 500.0}}
    aliases = {"greenlet_switch": {"labkit": "greenlet", "gevent": "greenlet"}}
    table = bench.format_callgrind_table(counts, ["gevent", "uvloop"], aliases)
    lines = table.splitlines()
    assert lines[1].split() == ["timer_cancel", "10,000", "20,000", "0.50×", "n/a", "n/a"]
    assert lines[2].split() == ["greenlet_switch", "500", "500", "same", "n/a", "n/a"]


def test_callgrind_mode_counts_the_issue_rows_by_default():
    args = bench.parse_args(["--callgrind"])
    assert args.benchmarks == list(bench.CALLGRIND_BENCHMARKS)
    n1, n2 = bench.callgrind_sizes(micro.BENCHMARKS["mass_sleep"])
    assert 0 < n1 < n2


def test_scale_runs_a_million_sleepers_and_holds_idle_connections(monkeypatch, capsys):
    from labkit.bench import echo
    asked = []

    def fake_worker(impl, bench_name, n, repeats, timeout=None):
        asked.append((impl, bench_name, n, repeats))
        return {"status": "ok", "impl": impl, "bench": bench_name, "n": n, "repeats": 1,
                "per_op_ns": 30_000.0, "extras": {"bytes_per_op": 7000.0, "left_per_op": 10.0}}

    def fake_idle(impl, count):
        return {"impl": impl, "held": count, "connect_s": 1.0, "rss_before": 0,
                "rss_after": count * 4096, "per_conn": 4096.0}

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    monkeypatch.setattr(echo, "measure_idle", fake_idle)
    monkeypatch.setattr(echo, "raise_fd_limit", lambda: 1 << 20)
    args = bench.parse_args(["--scale", "--peers", "gevent", "--rounds", "3"])
    scale = bench.run_scale(args)
    # one run per worker, alternating rounds (median and spread, as every row)
    assert asked == [(impl, "mass_sleep", bench.SCALE_SLEEPERS, 1)
                     for impl in ("labkit", "gevent", "gevent", "labkit", "labkit", "gevent")]
    assert scale["sleepers"]["mass_sleep"]["labkit"]["rounds"] == 3
    # a StreamServer, the WSGIServer and the peers
    assert [r["impl"] for r in scale["idle"]] == ["labkit", "wsgi", "gevent", "uvloop-proto"]
    assert [r["held"] for r in scale["idle"]] == [bench.SCALE_IDLE_CONNS] * 4
    out = capsys.readouterr().out
    assert "6.8 KiB" in out and "left after, per op" in out and "4.0 KiB per connection" in out


def test_http_bench_browser_head_sends_the_browser_fields_to_every_server(tmp_path):
    """--head browser: wrk's command carries each field, and a real run
    against labkit serves them without an error."""
    import shutil

    from labkit.bench import http
    command = http.wrk_command(8080, 2, 50, http.HEADS["browser"])
    assert command[:4] == ["wrk", "-t1", "-c50", "-d2s"] and command[-1] == "http://127.0.0.1:8080/"
    sent = [command[i + 1] for i, arg in enumerate(command) if arg == "-H"]
    assert sent == [f"{name}: {value}" for name, value in http.BROWSER_FIELDS]
    assert len(sent) == 9 and http.wrk_command(8080, 2, 50) == command[:4] + [command[-1]]
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk; .ci/run does)")
    out = tmp_path / "http.json"
    assert http.main(["--only", "labkit", "--duration", "1", "--rounds", "1",
                      "--head", "browser", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["labkit"]
    assert result["status"] == "ok" and result["rps"] > 0 and not result["non_2xx"]
    with pytest.raises(SystemExit):  # wrk takes whole seconds: 0.5 would measure nothing
        http.main(["--only", "labkit", "--duration", "0"])
