"""labkit.monkey: patched stdlib modules, exercised with real clients.

Patching changes the interpreter for good, so every test here runs its code in
a fresh ``python`` subprocess: nothing leaks into the rest of the test session.
"""
import subprocess
import sys
import textwrap

import pytest

from helpers import run_python

pytestmark = pytest.mark.timeout(60)


# A local HTTP server whose handler sleeps 0.2 s. It runs in a plain thread of
# the patched process, which has no hub: the patched socket, select and
# time.sleep must behave as the originals there (that is the thread rule).
# Each handler first waits until all 20 GETs have arrived: only a client
# that has them all in flight at once gets answers (one that sends them one
# after the other breaks the barrier after 10 s, and its GET fails).
HTTP_SERVER = """
import http.server, threading, time

ALL_IN_FLIGHT = threading.Barrier(20, timeout=10)

class SlowHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        ALL_IN_FLIGHT.wait()
        time.sleep(0.2)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

def start_server(wrap=None):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    if wrap is not None:
        httpd.socket = wrap(httpd.socket)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return httpd
"""

CONCURRENT_GETS = """
import time, labkit

def fetch_all(get, url, n=20):
    start = time.monotonic()
    greenlets = [labkit.spawn(get, f"{url}/{i}") for i in range(n)]
    labkit.joinall(greenlets, raise_error=True, timeout=30)
    assert [g.value for g in greenlets] == [f"/{i}" for i in range(n)]
    return time.monotonic() - start
"""


def test_patch_all_replaces_and_remembers_the_originals():
    out = run_python("""
        from labkit import monkey
        import socket as s0, threading as t0
        original, original_lock = s0.socket, t0.Lock
        monkey.patch_all()
        import socket, time, select, selectors, ssl
        import labkit.socket, labkit.select, labkit.selectors, labkit.ssl
        assert socket.socket is labkit.socket.socket
        assert socket.create_connection is labkit.socket.create_connection
        assert socket.getaddrinfo is labkit.socket.getaddrinfo
        assert select.select is labkit.select.select and not hasattr(select, "epoll")
        assert selectors.DefaultSelector is labkit.selectors.DefaultSelector
        assert ssl.SSLContext is labkit.ssl.SSLContext
        assert monkey.get_original("socket", "socket") is original
        assert monkey.get_original("socket", ["socket"]) == (original,)
        assert monkey.is_module_patched("socket") and not monkey.is_module_patched("subprocess")
        monkey.patch_all()  # twice is harmless: the true originals are kept
        assert monkey.get_original("socket", "socket") is original
        import _thread, threading, queue, os
        assert monkey.get_original("threading", "Lock") is original_lock
        assert threading.Lock is not original_lock
        assert monkey.get_original("_thread", "get_ident") is not _thread.get_ident
        assert monkey.get_original("queue", "SimpleQueue") is not queue.SimpleQueue
        assert monkey.get_original("os", "waitpid") is not os.waitpid
        monkey.unpatch_all()  # labkit's own: every original back
        assert socket.socket is original and threading.Lock is original_lock
        assert not monkey.is_module_patched("socket") and hasattr(select, "epoll")
        print("ok")
    """)
    assert out == "ok\n"


def test_patched_time_sleep_parks_only_the_greenlet():
    out = run_python("""
        from labkit import monkey; monkey.patch_all()
        import time, labkit
        asleep = [0, 0]   # now, most at once

        def nap():
            asleep[0] += 1
            asleep[1] = max(asleep[1], asleep[0])
            time.sleep(0.2)
            asleep[0] -= 1

        start = time.monotonic()
        labkit.joinall([labkit.spawn(nap) for _ in range(10)])
        print(asleep[1], round(time.monotonic() - start, 2))
    """)
    most_at_once, took = out.split()
    assert int(most_at_once) == 10   # all asleep together, not one after the other
    assert 0.2 <= float(took) < 2.0  # it did sleep; less than the 10 x 0.2 s sum


def test_a_thread_without_a_hub_gets_the_original_behaviour():
    out = run_python("""
        from labkit import monkey; monkey.patch_all()
        import socket, threading, time
        from labkit.hub import _get_hub_if_any
        result = []
        def in_thread():
            a, b = socket.socketpair()
            b.sendall(b"x")
            time.sleep(0.01)
            result.append((a.recv(1), socket.gethostbyname("localhost"),
                           _get_hub_if_any()))
        # threading.Thread is a greenlet under patch_all() (gevent's green
        # mode); the original start_new_thread still makes an OS thread.
        done = monkey.get_original("_thread", "allocate_lock")()
        done.acquire()
        def run():
            try:
                in_thread()
            finally:
                done.release()
        monkey.get_original("_thread", "start_new_thread")(run, ())
        done.acquire(True, 10)
        print(result)
    """)
    assert out == "[(b'x', '127.0.0.1', None)]\n"


def test_current_thread_of_a_greenlet_stays_and_the_exit_is_quiet():
    # 3.13's threading tracks a dummy thread with a keeper in a _thread._local,
    # which greenlets share: each new greenlet's keeper evicted the previous
    # greenlet's live dummy thread, and the last keeper died at interpreter
    # shutdown with threading's globals gone (a traceback at every exit).
    code = textwrap.dedent("""
        from labkit import monkey; monkey.patch_all()
        import threading, labkit
        seen = {}
        def first():
            seen["before"] = threading.current_thread()
            labkit.sleep(0.01)
            seen["after"] = threading.current_thread()
        def second():
            seen["other"] = threading.current_thread()
        labkit.joinall([labkit.spawn(first), labkit.spawn(second)])
        print(seen["before"] is seen["after"], seen["before"] is not seen["other"])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=45)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True True\n"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, \
        done.stderr


def test_patch_thread_refuses_to_switch_modes_and_unknown_modes():
    out = run_python("""
        from labkit import monkey
        monkey.patch_all(threads="native")
        assert monkey.thread_mode() == "native"
        for bad in ("green", "fibers"):
            try:
                monkey.patch_thread(threads=bad)
            except ValueError as exc:
                assert bad in str(exc)
            else:
                raise AssertionError(bad)
        monkey.unpatch_all()
        monkey.patch_thread(threads="green")
        print(monkey.thread_mode())
    """)
    assert out == "green\n"


def test_patching_after_ssl_was_imported_warns():
    out = run_python("""
        import ssl, warnings
        from labkit import monkey
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monkey.patch_all()
        print(any("ssl" in str(w.message) for w in caught))
    """)
    assert out == "True\n"


def test_patch_all_inside_an_import_leaves_the_import_system_working(tmp_path):
    # Celery imports its pool module (which patches) while the import lock
    # is held; that lock was taken under the thread's OS ident.
    (tmp_path / "patches_on_import.py").write_text(
        "from labkit import monkey\nmonkey.patch_all()\n")
    out = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import patches_on_import
        import json, threading
        print(threading.get_ident() != threading.main_thread().native_id, json.dumps(1))
    """)
    assert out == "True 1\n"


def test_python_dash_m_labkit_monkey_runs_a_script_patched(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import socket, sys, labkit.socket
        print(socket.socket is labkit.socket.socket, sys.argv[1:], __name__)
    """))
    done = subprocess.run([sys.executable, "-m", "labkit.monkey", str(script), "a", "b"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True ['a', 'b'] __main__\n"


def test_requests_concurrent_gets_finish_together():
    pytest.importorskip("requests")
    out = run_python("from labkit import monkey; monkey.patch_all()\n"
                     + HTTP_SERVER + CONCURRENT_GETS + """
import requests
httpd = start_server()
url = f"http://127.0.0.1:{httpd.server_address[1]}"
session_get = lambda u: requests.get(u, timeout=10).text
print(round(fetch_all(session_get, url), 2))
httpd.shutdown()
""")
    # The server's barrier saw all 20 GETs in flight at once (one after the
    # other, the first would have failed after its 10 s wait).
    assert float(out) < 10


def test_urllib3_concurrent_gets_finish_together():
    pytest.importorskip("urllib3")
    out = run_python("from labkit import monkey; monkey.patch_all()\n"
                     + HTTP_SERVER + CONCURRENT_GETS + """
import urllib3
httpd = start_server()
url = f"http://127.0.0.1:{httpd.server_address[1]}"
http = urllib3.PoolManager(maxsize=20)
print(round(fetch_all(lambda u: http.request("GET", u).data.decode(), url), 2))
httpd.shutdown()
""")
    assert float(out) < 10   # all 20 in flight at once: see HTTP_SERVER


def test_requests_over_https_with_a_throwaway_ca():
    pytest.importorskip("requests")
    pytest.importorskip("trustme")
    out = run_python("from labkit import monkey; monkey.patch_all()\n"
                     + HTTP_SERVER + CONCURRENT_GETS + """
import ssl, tempfile, requests, trustme
ca = trustme.CA()
server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ca.issue_cert("127.0.0.1").configure_cert(server_context)
httpd = start_server(lambda sock: server_context.wrap_socket(sock, server_side=True))
url = f"https://127.0.0.1:{httpd.server_address[1]}"
with ca.cert_pem.tempfile() as ca_file:
    print(round(fetch_all(lambda u: requests.get(u, verify=ca_file, timeout=10).text, url), 2))
httpd.shutdown()
""")
    assert float(out) < 10   # all 20 in flight at once: see HTTP_SERVER


# -- gevent's bookkeeping and events ---------------------------------------------

def test_saved_is_the_record_of_originals_and_is_anything_patched_says_so():
    out = run_python("""
        from labkit import monkey
        before = monkey.is_anything_patched()
        monkey.patch_all()
        import time, socket
        print(before, monkey.is_anything_patched(),
              monkey.saved["time"]["sleep"] is monkey.get_original("time", "sleep"),
              time.sleep.__module__, socket.socket.__module__)
    """)
    assert out.split() == ["False", "True", "True", "labkit.time", "labkit.socket"]


def test_patching_tells_the_event_subscribers_and_a_veto_skips_a_module():
    out = run_python("""
        from labkit import events, monkey
        seen = []
        def subscriber(event):
            seen.append(type(event).__name__ + ":" + getattr(event, "module_name", ""))
            if isinstance(event, events.GeventWillPatchModuleEvent) and \\
                    event.module_name == "ssl":
                raise events.DoNotPatch
        events.subscribers.append(subscriber)
        monkey.patch_all(thread=False, os=False, queue=False, extra=1)
        print(seen[0], seen[-2], seen[-1])
        print("ssl patched:", monkey.is_module_patched("ssl"),
              "socket did:", "GeventDidPatchModuleEvent:socket" in seen)
    """)
    first, second = out.splitlines()
    assert first.split() == ["GeventWillPatchAllEvent:", "GeventDidPatchBuiltinModulesEvent:",
                             "GeventDidPatchAllEvent:"]
    assert second == "ssl patched: False socket did: True"


def test_patching_again_with_other_settings_warns_and_patches_only_what_was_off():
    out = run_python("""
        import warnings
        from labkit import events, monkey
        monkey.patch_all(thread=False, os=False, queue=False)
        seen = []
        events.subscribers.append(seen.append)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            monkey.patch_all(thread=False, os=False, queue=False, time=False)
        print(len(caught), "more than once" in str(caught[0].message), seen == [])
    """)
    assert out.split() == ["1", "True", "True"]


def test_patch_sys_makes_the_standard_streams_thread_file_objects():
    out = run_python("""
        import sys
        from labkit import monkey
        from labkit.fileobject import FileObjectThread
        monkey.patch_sys(stdin=False)
        sys.stdout.write("written\\n")
        sys.stdout.flush()
        print(isinstance(sys.stdout, FileObjectThread), isinstance(sys.stdin, FileObjectThread))
    """)
    assert out.split() == ["written", "True", "False"]
