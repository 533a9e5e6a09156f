"""What a timeline shows, in plain words: the one legend of the tracer.

Every picture and description of a trace takes its colours and words from
here -- the matplotlib timeline and its PNG (tracing/plot.py, which the
tour, ``%%trace`` and the Dashboard draw with), the tour's "how to look at
it" text, the names of the Perfetto slices (tracing/export.py) and the
README's "Reading a timeline" section (tests/test_tracing_legend.py keeps it equal to
:func:`markdown`). Change a word here and it changes everywhere.

    ENTRIES                     the legend: key, colour, plain words
    wait_kind(reason)           which entry a wait is drawn as
    wait_words(reason, asked)   a wait in plain words: "waiting to read (fd 5)"
    run_words(reason)           why a greenlet ran: "woke: its sleep ended"
    text() / markdown()         the legend for a terminal / for docs

``reason`` is the model's (tracing/model.py): "ready", "timer", "start",
"fd 5 read", "throw (fd 5 read)", a Waiter's label ("Event", "join", ...).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One colour of the timeline and what it means."""
    key: str
    color: str
    words: str          #: plain words, for people who never read the code
    hatch: str | None = None


#: The legend, in the order it is shown.
ENTRIES = (
    Entry("running", "#1f4e79", "running: its code is executing"),
    Entry("idle", "#8c8c8c", "loop idle: waiting for I/O or a timer"),
    Entry("ready", "#9ecae1", "ready: woken, waiting for its turn"),
    Entry("sleeping", "#fdd0a2", "sleeping (labkit.sleep, a timeout)"),
    Entry("io", "#a1d99b", "waiting for a socket or file"),
    Entry("other", "#cbc9e2", "waiting for another greenlet (Event, Queue, Lock, join)"),
    Entry("unstarted", "#e0e0e0", "spawned, not started yet"),
    Entry("late", "#f16913", "woke late: its sleep was over, it could not run", hatch="///"),
    Entry("blocked", "#d62728", "blocked the loop: no other greenlet could run"),
)

_BY_KEY = {entry.key: entry for entry in ENTRIES}

#: A sleep that ran this long after it was due is "late" (the loop's timers
#: have about a millisecond of slack; less than this is not worth a mark).
LATE = 0.002


def entry(key: str) -> Entry:
    """The entry named ``key`` (KeyError if there is none)."""
    return _BY_KEY[key]


def color(key: str) -> str:
    return _BY_KEY[key].color


def _inner(reason: str) -> str:
    # "throw (fd 5 read)": the wait on fd 5 ended with an exception.
    if reason.startswith("throw (") and reason.endswith(")"):
        return reason[len("throw ("):-1]
    return reason


def wait_kind(reason: str) -> str:
    """The key of the entry a wait that ended with ``reason`` is drawn as."""
    inner = _inner(reason)
    if inner.startswith("fd ") or inner == "select":
        return "io"
    if inner in ("ready", "throw", "switch") or inner.startswith("switch from"):
        return "ready"
    if inner == "timer":
        return "sleeping"
    if inner == "start":
        return "unstarted"
    return "other"


def _fd_words(inner: str) -> str:
    parts = inner.split()   # "fd 5 read"
    if len(parts) == 3:
        verb = "read" if parts[2] == "read" else "write"
        return f"waiting to {verb} (fd {parts[1]})"
    return "waiting for a socket or file"


def wait_words(reason: str, asked: float | None = None) -> str:
    """A wait that ended with ``reason``, in plain words. ``asked``: the
    seconds a sleep asked for, if known ("sleeping 20 ms")."""
    inner = _inner(reason)
    if inner.startswith("fd "):
        words = _fd_words(inner)
    elif inner == "select":
        words = "waiting for sockets or files (select)"
    elif inner == "timer":
        words = f"sleeping {format_seconds(asked)}" if asked is not None else "sleeping"
    elif inner == "ready" or inner == "throw":
        words = "ready, waiting for its turn"
    elif inner.startswith("switch"):
        words = "switched away"
    elif inner == "start":
        words = "not started yet"
    else:
        words = f"waiting for {inner}"
    if reason.startswith("throw") and reason != "throw":
        words += ", interrupted by an exception"
    return words


def run_words(reason: str) -> str:
    """Why a greenlet (or the hub) started running, in plain words."""
    inner = _inner(reason)
    if reason == "pass":
        return "hub: running ready callbacks"
    if reason == "dispatch":
        return "hub: handing out I/O and timer events"
    if reason == "poll":
        return "loop idle: waiting for I/O or a timer"
    if reason == "trace start":
        return "running (when the trace started)"
    if reason.startswith("throw"):
        return "woke: an exception was thrown in"
    if inner.startswith("fd "):
        verb = "readable" if inner.endswith("read") else "writable"
        return f"woke: fd {inner.split()[1]} {verb}"
    if inner == "timer":
        return "woke: its sleep or timeout ended"
    if inner == "ready":
        return "woke: its turn came (ready queue)"
    if inner == "start":
        return "first run"
    if inner == "waiter":
        return "woke: another greenlet woke it"
    if inner.startswith("switch from"):
        return f"switched to directly, {inner}"
    return f"woke: {inner}"


def format_seconds(seconds: float) -> str:
    """"141 ms", "20 ms", "350 µs", "1.20 s": short and plain."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.0095:
        return f"{seconds * 1e3:.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def text(indent: str = "  ") -> str:
    """The legend for a terminal: one line per colour."""
    width = max(len(e.key) for e in ENTRIES)
    return "\n".join(f"{indent}{e.key.ljust(width)}  {e.words}" for e in ENTRIES)


def markdown() -> str:
    """The legend as a Markdown table (the README's "Reading a timeline")."""
    lines = ["| colour | means |", "|---|---|"]
    lines += [f"| {e.key} (`{e.color}`{', hatched' if e.hatch else ''}) | {e.words} |"
              for e in ENTRIES]
    return "\n".join(lines)
