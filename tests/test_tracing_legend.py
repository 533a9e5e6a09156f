"""tracing.legend: the one legend of the timeline, in plain words; the README
shows the same one."""
import os

from tracing import legend


def test_the_readme_shows_the_same_legend():
    readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    section = text.split("<!-- legend:", 1)[1].split("-->", 1)[1].split("<!-- /legend -->")[0]
    assert section.strip() == legend.markdown()


def test_wait_words_are_plain():
    assert (legend.wait_words("throw (fd 5 read)")
            == "waiting to read (fd 5), interrupted by an exception")
    assert legend.wait_words("timer", 0.02) == "sleeping 20 ms"
    assert legend.wait_words("Event") == "waiting for Event"
    assert legend.wait_kind("fd 7 write") == "io" and legend.wait_kind("join") == "other"
    assert legend.run_words("fd 5 read") == "woke: fd 5 readable"


def test_the_text_legend_has_every_entry_once():
    lines = legend.text().splitlines()
    assert len(lines) == len(legend.ENTRIES)
    assert [line.split()[0] for line in lines] == [e.key for e in legend.ENTRIES]


def test_format_seconds_is_short():
    assert legend.format_seconds(0.141) == "141 ms"
    assert legend.format_seconds(0.0003) == "300 µs"
    assert legend.format_seconds(2.5) == "2.50 s"
