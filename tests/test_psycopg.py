"""psycopg 3 after monkey.patch_all(): its waits park the greenlet, so
concurrent queries overlap (against a real PostgreSQL, tests/postgres.py)."""
import textwrap

import pytest

from helpers import run_python

pytestmark = pytest.mark.timeout(120)

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def postgres():
    from postgres import PostgresUnavailable, running_postgres
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("import_first", [False, True])
def test_twenty_concurrent_pg_sleeps_take_about_one_sleep(postgres, import_first):
    out = run_python(textwrap.dedent(f"""
        import time
        {"import psycopg" if import_first else ""}
        from labkit import monkey
        monkey.patch_all()
        import psycopg
        import labkit

        def query():
            with psycopg.connect({postgres.dsn()!r}) as conn:
                conn.execute("select pg_sleep(0.5)")

        start = time.monotonic()
        labkit.joinall([labkit.spawn(query) for _ in range(20)], raise_error=True)
        from labkit import _psycopg
        print(round(time.monotonic() - start, 2), _psycopg.is_patched())
    """))
    seconds, patched = out.split()
    assert patched == "True"
    assert float(seconds) < 5, seconds       # serialized: 20 x 0.5 s = 10 s
