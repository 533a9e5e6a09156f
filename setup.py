"""Build hook for the C loop.

Everything declarative lives in pyproject.toml; this file exists only because
cffi's setuptools integration is configured through the `cffi_modules`
keyword, which pyproject.toml cannot express. The builder compiles loop_c/
into the extension module ``labkit._lk_loop``.
"""
from setuptools import setup

setup(cffi_modules=["loop_c/build_loop.py:ffibuilder"])
