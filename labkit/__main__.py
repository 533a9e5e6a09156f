"""``python -m labkit COMMAND``: the command line.

    python -m labkit           a REPL where top-level code may call labkit.sleep/spawn
    python -m labkit tour      an echo server, clients and one blocking call, traced
    python -m labkit bench     side-by-side benchmarks against gevent/asyncio/uvloop

Each command lives in its own module; this file only dispatches.
"""
from __future__ import annotations

import sys

USAGE = """usage: python -m labkit COMMAND [ARGS]

commands:
  repl     (the default) a Python REPL whose statements run on the hub
  tour     an echo server, clients and one blocking call, traced; writes a
           timeline PNG and a Perfetto JSON (--out DIR)
  bench    benchmark labkit against gevent, asyncio and uvloop (--help for options;
           --http, --notebook, --echo, --robustness add suites)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "repl":
        from labkit.repl import console_main
        return console_main(argv[1:])
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from labkit.bench import main as bench_main
        return bench_main(rest)
    if command == "tour":
        from labkit.tour import main as tour_main
        return tour_main(rest)
    print(f"labkit: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
