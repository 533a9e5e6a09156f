"""labkit needs a GIL: what it refuses, and what its C extensions declare.

labkit's C parts assume a GIL (the trace ring's writer relies on it to keep
writers apart; the frame-stack block cache is not installed without one).
So ``import labkit`` on a free-threaded CPython raises ImportError saying so,
and the two CPython extensions (loop_c/lk_trace_py.c, loop_c/lk_poll_py.c)
use multi-phase init to declare that they need the GIL (``Py_mod_gil``,
3.13+) and may be loaded by several interpreters only if those share one GIL
(``Py_mod_multiple_interpreters``, 3.12+).

No free-threaded interpreter is installed where these tests run, so the check
is tested with the config value faked.
"""
import importlib.util

import pytest

from helpers import run_python
from labkit._loop import refuse_free_threaded

EXTENSIONS = ["labkit._lk_trace_py", "labkit._lk_poll_py"]


# --- free-threaded CPython is refused ---------------------------------------

@pytest.mark.parametrize("gil_disabled", [1, True])
def test_a_free_threaded_build_is_refused_with_the_reason(gil_disabled):
    with pytest.raises(ImportError) as info:
        refuse_free_threaded(gil_disabled)
    message = str(info.value)
    assert "free-threaded" in message and "GIL" in message
    assert "trace ring" in message and "arena cache" in message


@pytest.mark.parametrize("gil_disabled", [0, None])   # 3.13+ say 0, older ones None
def test_a_build_with_the_gil_is_accepted(gil_disabled):
    refuse_free_threaded(gil_disabled)


def test_import_labkit_raises_importerror_when_sysconfig_says_the_gil_is_disabled():
    out = run_python("""
        import sysconfig
        real_get_config_var = sysconfig.get_config_var
        sysconfig.get_config_var = lambda name: (
            1 if name == "Py_GIL_DISABLED" else real_get_config_var(name))
        try:
            import labkit
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
    """)
    assert "does not support free-threaded CPython" in out


# --- the C extensions declare what they need ---------------------------------

@pytest.mark.parametrize("name", EXTENSIONS)
def test_the_extensions_use_multi_phase_init(name):
    # A multi-phase PyInit_* returns the module's definition (a "moduledef"
    # object), which the import system then turns into a module using its
    # slots; a single-phase one returns the module itself.
    out = run_python(f"""
        import ctypes
        import importlib.util

        path = importlib.util.find_spec({name!r}).origin
        init = getattr(ctypes.PyDLL(path), "PyInit_" + {name!r}.rpartition(".")[2])
        init.restype = ctypes.py_object
        result = init()
        # ctypes believes it owns a reference to the result; a moduledef is a
        # static object that nobody may free, so give it one to drop.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(result))
        print(type(result).__name__)
    """)
    assert out.strip() == "moduledef"


def load_in_subinterpreter(name, config):
    """Load the extension ``name`` by its file (not through the labkit package,
    which needs greenlet) in a new subinterpreter made from ``config``;
    return None, or the last line of the error."""
    import _interpreters

    code = (f"import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location("
            f"{name!r}, {importlib.util.find_spec(name).origin!r})\n"
            f"importlib.util.module_from_spec(spec)\n")
    interp = _interpreters.create(config)
    try:
        failure = _interpreters.exec(interp, code)
    finally:
        _interpreters.destroy(interp)
    return None if failure is None else failure.formatted.strip().splitlines()[-1]


def can_configure_subinterpreters():
    """Whether this CPython lets a test choose a subinterpreter's GIL and
    extension checks (``_interpreters.new_config``, 3.13+)."""
    try:
        import _interpreters
    except ImportError:
        return False
    return hasattr(_interpreters, "new_config")


@pytest.mark.skipif(not can_configure_subinterpreters(),
                    reason="needs _interpreters.new_config (CPython 3.13+) to choose "
                           "a subinterpreter's GIL and extension checks")
@pytest.mark.parametrize("name", EXTENSIONS)
def test_the_extensions_load_in_subinterpreters_that_share_the_gil_only(name):
    import _interpreters

    # Extension checks on, GIL shared: a single-phase module, or one that
    # declared no support for several interpreters, would be refused here.
    shared = _interpreters.new_config("legacy", check_multi_interp_extensions=True)
    assert load_in_subinterpreter(name, shared) is None
    own = _interpreters.new_config("isolated")
    assert own.gil == "own"
    refusal = load_in_subinterpreter(name, own)
    assert refusal is not None and "does not support loading in subinterpreters" in refusal
