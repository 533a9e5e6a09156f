"""labkit.fileobject: file objects whose blocking calls park the greenlet."""
import os
import time

import pytest

import labkit
from labkit.fileobject import (FileObject, FileObjectBlock, FileObjectPosix,
                               FileObjectThread)


def test_the_default_file_object_is_the_cooperative_posix_one():
    assert FileObject is FileObjectPosix


@pytest.mark.parametrize("kind", [FileObjectPosix, FileObjectThread])
def test_a_read_on_an_empty_pipe_lets_other_greenlets_run(pipe, kind):
    r, w = pipe
    reader = kind(r, "rb", bufsize=0)
    ticks = []

    def ticker():
        for _ in range(3):
            ticks.append(1)
            labkit.sleep(0.001)
        os.write(w, b"hello")

    labkit.spawn(ticker)
    assert reader.read(5) == b"hello"
    assert len(ticks) == 3
    reader.close()


def test_text_mode_reads_lines_and_iterates(pipe):
    r, w = pipe
    os.write(w, b"one\ntwo\n")
    os.close(w)
    with FileObjectPosix(r, "r") as f:
        assert list(f) == ["one\n", "two\n"]
    assert f.closed


def test_closing_wakes_a_greenlet_parked_on_the_fd_with_ebadf(pipe):
    r, _w = pipe
    reader = FileObjectPosix(r, "rb", bufsize=0, close=False)
    outcome = []

    def read():
        try:
            reader.fileio.read(1)
        except OSError as exc:
            outcome.append(exc.errno)

    g = labkit.spawn(read)
    labkit.sleep(0.001)
    reader.close()
    g.join(1)
    import errno
    assert outcome == [errno.EBADF]


def test_a_closed_file_object_raises_on_use_but_keeps_its_name(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("x")
    f = FileObjectThread(str(path))
    f.close()
    assert f.name == str(path)
    with pytest.raises(OSError):
        f.read()


def test_thread_file_objects_run_regular_file_reads_in_the_pool(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * 100)
    with FileObjectThread(str(path), "rb") as f:
        assert f.read() == b"a" * 100


def test_open_arguments_are_checked_like_io_open(tmp_path):
    with pytest.raises(ValueError, match="text and binary"):
        FileObjectBlock(str(tmp_path / "x"), "rtb")
    with pytest.raises(ValueError, match="encoding"):
        FileObjectBlock(str(tmp_path / "x"), "wb", encoding="utf-8")
    with pytest.raises(TypeError, match="mode"):
        FileObjectBlock(str(tmp_path / "x"), 42)


def test_the_mode_is_reported_as_given(pipe):
    r, w = pipe
    assert FileObjectPosix(w, "wb", close=False).mode == "wb"
    assert FileObjectPosix(r, "rb", close=False).mode == "rb"
