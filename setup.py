"""Build hook for the C code.

Everything declarative lives in pyproject.toml; this file exists only because
what it builds cannot be expressed there:

* ``labkit._lk_loop``: the C loop, compiled by cffi (the ``cffi_modules``
  keyword) from loop_c/;
* ``labkit._lk_trace_py``: one CPython builtin that writes trace records into
  the loop's ring without releasing the GIL (see loop_c/lk_trace_py.c for why
  it is not part of the cffi module);
* ``labkit._lk_poll_py``: the loop's zero-timeout poll, its timers' start
  and cancel, and the C half of Timeout, called without releasing the GIL
  (see loop_c/lk_poll_py.c, loop_c/lk_timers_py.c, loop_c/lk_timeout_py.c);
  its io watchers and the poll that dispatches to them (loop_c/lk_io_py.c);
  recv and send for labkit.socket, which never wait (loop_c/lk_sock_py.c);
* ``labkit._lk_http_py``: the HTTP server's per-field work -- the parser's
  field callback and the environ's fields (see loop_c/lk_http_py.c).
"""
from setuptools import Extension, setup

trace_writer = Extension(
    "labkit._lk_trace_py",
    sources=["loop_c/lk_trace_py.c", "loop_c/lk_clock.c"],
    include_dirs=["loop_c"],
    depends=["loop_c/lk_trace_ring.h", "loop_c/lk_loop.h", "loop_c/lk_loop_internal.h"],
    extra_compile_args=["-O2", "-std=c11"],
)

nowait_poller = Extension(
    "labkit._lk_poll_py",
    sources=["loop_c/lk_poll_py.c", "loop_c/lk_timers_py.c", "loop_c/lk_timeout_py.c",
             "loop_c/lk_io_py.c", "loop_c/lk_sock_py.c"],
    include_dirs=["loop_c"],
    depends=["loop_c/lk_loop.h", "loop_c/lk_timers_py.h", "loop_c/lk_timeout_py.h",
             "loop_c/lk_io_py.h", "loop_c/lk_sock_py.h"],
    extra_compile_args=["-O2", "-std=c11"],
)

http_fields = Extension(
    "labkit._lk_http_py",
    sources=["loop_c/lk_http_py.c"],
    extra_compile_args=["-O2", "-std=c11"],
)

setup(cffi_modules=["loop_c/build_loop.py:ffibuilder"],
      ext_modules=[trace_writer, nowait_poller, http_fields])
