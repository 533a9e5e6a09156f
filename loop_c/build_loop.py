"""cffi builder for labkit's C event loop: ``labkit._lk_loop``.

API mode, out of line: the C sources are compiled into an extension module by
the package build (``cffi_modules=["loop_c/build_loop.py:ffibuilder"]`` in
setup.py), so a fresh ``pip install .`` compiles the loop.

Paths are found from ``__file__``, never from the working directory.  How they
are spelled depends on who compiles:

* setuptools (``cffi_modules``, which loads this file with ``__name__ ==
  "__cffi__"``) runs in the project root and wants source paths relative to
  it, so they come out as ``loop_c/lk_loop.c``;
* ``ffibuilder.compile()`` (running this file, or importing it in a dev
  script) changes into its ``tmpdir`` before calling the compiler, so there
  the paths must be absolute.

Extra compiler flags come from the environment variable ``LABKIT_CFLAGS``
(for example ``LABKIT_CFLAGS="-fsanitize=address -g"``); they are passed to
the linker too, which sanitizers need.
"""

import os
import shlex
import sys

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT_ROOT = os.path.dirname(HERE)

# One file per concern; see loop_c/README.md.  epoll exists only on Linux.
C_FILES = [
    "lk_loop.c",
    "lk_clock.c",
    "lk_timer_heap.c",
    "lk_wakeup.c",
    "lk_backend_poll.c",
    "lk_arena_cache.c",
    "lk_memory.c",
    "lk_trace.c",
    "lk_fold.c",
    "lk_strip.c",
]
if sys.platform.startswith("linux"):
    C_FILES.append("lk_backend_epoll.c")


def _path(name):
    """A file of loop_c/, spelled as the current compiler driver needs."""
    path = os.path.join(HERE, name)
    if __name__ == "__cffi__":
        return os.path.relpath(path, PROJECT_ROOT)
    return path


def _read_cdef():
    with open(os.path.join(HERE, "lk_loop.cdef"), encoding="utf-8") as f:
        return f.read()


_extra_flags = shlex.split(os.environ.get("LABKIT_CFLAGS", ""))

ffibuilder = cffi.FFI()
ffibuilder.cdef(_read_cdef())
ffibuilder.set_source(
    "labkit._lk_loop",
    '#include "lk_loop.h"',
    sources=[_path(name) for name in C_FILES],
    include_dirs=[_path(".")],
    depends=[_path(name)
             for name in ("lk_loop.h", "lk_loop_internal.h", "lk_trace_ring.h",
                          "lk_loop.cdef")],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"] + _extra_flags,
    # lk_arena_cache.c uses PyObject_SetArenaAllocator, which the stable ABI
    # does not offer: build for this Python version, not abi3.
    py_limited_api=False,
    define_macros=[("_CFFI_NO_LIMITED_API", None)],
    extra_link_args=_extra_flags,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
