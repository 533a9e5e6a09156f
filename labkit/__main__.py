"""``python -m labkit COMMAND``: the command line.

    python -m labkit           a REPL where top-level code may call labkit.sleep/spawn
    python -m labkit bench     side-by-side benchmarks against gevent/asyncio/uvloop
    python -m labkit tour      an echo server, clients and one blocking call, traced

``repl`` and ``bench`` are labkit's own; other commands come from plug-ins
(:mod:`labkit.plugins`) -- ``tour`` is the tracer's. Each command lives in
its own module; this file only dispatches.
"""
from __future__ import annotations

import sys

from labkit import plugins

USAGE = """usage: python -m labkit COMMAND [ARGS]

commands:
  repl     (the default) a Python REPL whose statements run on the hub
  bench    benchmark labkit against gevent, asyncio and uvloop (--help for options;
           --http, --notebook, --echo, --robustness add suites)
"""


def usage() -> str:
    """USAGE, then one entry per plug-in command (its docstring's first paragraph)."""
    lines = [USAGE.rstrip("\n")]
    for name in plugins.command_names():
        summary = plugins.command_summary(name).splitlines() or [""]
        lines.append(f"  {name:<8} {summary[0]}".rstrip())
        lines += [f"{'':11}{line}" for line in summary[1:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "repl":
        from labkit.repl import console_main
        return console_main(argv[1:])
    if argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from labkit.bench import main as bench_main
        return bench_main(rest)
    plugin_main = plugins.command(command)
    if plugin_main is not None:
        return plugin_main(rest)
    print(f"labkit: unknown command {command!r}\n\n{usage()}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
