"""Concurrency, shutdown, reload and overload against real galaxyd processes.

  * 64 clients sending different images at once get exactly the answers each
    image gets alone (batching never mixes rows up or changes a number);
  * SIGTERM while requests wait in the queue: every accepted request is
    answered 200, and the process exits 0; a new connection is refused at
    once; SIGTERM while every libmicrohttpd thread is busy exits 0 (a shim
    widens libmicrohttpd's epoll quiesce race, which once aborted galaxyd);
    a request that never completes holds a stop only for the drain timeout;
  * reloads (API and SIGHUP, alternating checkpoints) under load: no request fails;
  * a full queue answers 503 + Retry-After at once; a passed deadline 504.

Timing-dependent states are reached deterministically: a long
--batch-delay-us keeps jobs waiting in the queue (the worker waits for a
fuller batch), and the tests poll /metrics' queue depth instead of sleeping.
"""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import requests

from conftest import (MODEL, Galaxyd, auth, galaxy_png, metric, read_answer, same_numbers, start,
                      wait_for)


# A server whose worker holds jobs in the queue (waiting for a fuller batch)
# for 10 s, far longer than any test needs to observe the queue.
HOLD = ["--max-batch", "64", "--batch-delay-us", "10000000", "--deadline-ms", "60000"]


def post_png(server, png, timeout=60, **kw):
    return requests.post(server.url("/v1/classify"), data=png, timeout=timeout,
                         headers={"Content-Type": "image/png", **auth()}, **kw)


def queue_depth(server):
    text = requests.get(server.url("/metrics"), timeout=10).text
    return metric(text, "galaxyd_queue_depth", {"model": MODEL}) or 0


def inflight(server):
    """Requests galaxyd is handling (this /metrics request included)."""
    text = requests.get(server.url("/metrics"), timeout=10).text
    return metric(text, "galaxyd_inflight_requests") or 0


def run_threads(fns):
    """Starts one thread per fn at the same moment (a barrier); returns results
    in order (an exception object where a call raised)."""
    out = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def go(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as e:   # noqa: BLE001 - reported by the caller
            out[i] = e

    ts = [threading.Thread(target=go, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def key(answer):
    return (answer["class_index"], tuple(answer["probs"]), answer["redshift"], answer["model_version"])


def test_64_clients_get_their_own_answers(env, spec):
    s = start(env, "c64", ["--max-batch", "32", "--batch-delay-us", "20000", "--threads", "8"])
    try:
        imgs = [("image/png", galaxy_png(1000 + i)) for i in range(48)]
        for path in env["fits"][:16]:
            with open(path, "rb") as f:
                imgs.append(("application/fits", f.read()))
        alone = []
        for ctype, data in imgs:
            r = requests.post(s.url("/v1/classify"), data=data, headers={"Content-Type": ctype, **auth()}, timeout=60)
            alone.append(spec.check(r))
            assert r.status_code == 200
        assert len({key(a) for a in alone}) > 32, "the 64 test images are not different enough"
        for rnd in range(2):
            order = list(range(64)) if rnd == 0 else list(reversed(range(64)))

            def call(i):
                ctype, data = imgs[i]
                return requests.post(s.url("/v1/classify"), data=data, timeout=120,
                                     headers={"Content-Type": ctype, **auth()})

            res = run_threads([lambda i=i: call(i) for i in order])
            batch_sizes = []
            for i, r in zip(order, res):
                assert not isinstance(r, Exception), f"image {i}: {r!r}"
                body = spec.check(r)
                assert r.status_code == 200, r.text
                kb, ka = key(body), key(alone[i])
                assert (kb[0], kb[3]) == (ka[0], ka[3]) and same_numbers([*kb[1], kb[2]], [*ka[1], ka[2]]), \
                    f"image {i} got another answer when sent with 63 others"
                assert body["image"]["sha256"] == alone[i]["image"]["sha256"]
                batch_sizes.append(body["timing"]["batch_size"])
            assert max(batch_sizes) > 1, "64 simultaneous requests were never batched"
    finally:
        assert s.stop() == 0


def test_sigterm_answers_every_accepted_request(env, spec):
    # Jobs wait up to 10 s for a fuller batch (deadline 60 s): all 16 are
    # queued when SIGTERM comes, however slowly the client threads start.
    s = start(env, "term", HOLD)
    n = 16
    pngs = [galaxy_png(2000 + i) for i in range(n)]
    results = [None] * n

    def call(i):
        try:
            results[i] = post_png(s, pngs[i])
        except Exception as e:   # noqa: BLE001
            results[i] = e

    ts = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    try:
        for t in ts:
            t.start()
        wait_for(lambda: queue_depth(s) == n, 20, f"{n} queued jobs")
        t0 = time.monotonic()
        s.send_signal(signal.SIGTERM)
        # A request racing the shutdown is refused (connection or 503) or answered: never broken.
        try:
            late = post_png(s, pngs[0], timeout=30)
            assert late.status_code in (200, 503), late.text
            if late.status_code == 503:
                spec.check(late)
        except requests.ConnectionError:
            pass
        for t in ts:
            t.join(60)
        for i, r in enumerate(results):
            assert not isinstance(r, Exception) and r is not None, f"request {i} was accepted but not answered: {r!r}"
            assert r.status_code == 200, f"request {i}: {r.status_code} {r.text[:200]}"
            spec.check(r)
        rc = s.proc.wait(60)
        assert rc == 0, f"galaxyd exited {rc} after SIGTERM:\n{s.log()[-2000:]}"
        assert time.monotonic() - t0 < 30
    finally:
        s.stop()


def _shim(tmp_path):
    """tests/daemon/slow_epoll_del.c built as a shared object."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (cc or gcc) on PATH to build the epoll shim"
    so = str(tmp_path / "slow_epoll_del.so")
    src = os.path.join(os.path.dirname(__file__), "slow_epoll_del.c")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", so, src, "-ldl"], check=True)
    return so


def test_sigterm_under_load_exits_cleanly(env, tmp_path):
    # SIGTERM while every pool thread of libmicrohttpd is busy, with the
    # listening socket's epoll removal slowed to 2 ms (the shim): a galaxyd
    # that quiesced an epoll daemon aborted in about half of these stops
    # (libmicrohttpd's own race; daemon/gx_server.c runs it on poll()).
    proc_env = dict(os.environ, LD_PRELOAD=_shim(tmp_path),
                    # an ASan build checks that its runtime comes first
                    ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
    for cycle in range(8):
        s = start(env, f"stop-race-{cycle}", api_key=False, proc_env=proc_env)
        stop = threading.Event()
        answered = [0]

        def hammer():
            with requests.Session() as h:
                while not stop.is_set():
                    try:
                        if h.get(s.url("/healthz"), timeout=10).status_code == 200:
                            answered[0] += 1
                    except requests.RequestException:
                        time.sleep(0.01)

        ts = [threading.Thread(target=hammer) for _ in range(8)]
        try:
            for t in ts:
                t.start()
            wait_for(lambda: answered[0] >= 50, 30, "50 answers under load")
            rc = s.stop()   # SIGTERM, under the load
            assert rc == 0, f"cycle {cycle}: galaxyd exited {rc} after SIGTERM under load:\n{s.log()[-2000:]}"
        finally:
            stop.set()
            for t in ts:
                t.join(30)
            s.stop()


def half_sent_classify(s, png):
    """A connection whose POST /v1/classify has sent its headers and 10 bytes
    of png, once galaxyd counts it in flight (it holds a drain until the
    rest comes): the caller closes it."""
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Authorization: {auth()['Authorization']}\r\nContent-Length: {len(png)}\r\n\r\n").encode()
    c = socket.create_connection((s.host, s.port), timeout=30)
    c.sendall(head + png[:10])
    wait_for(lambda: inflight(s) >= 2, 20, "the half-sent request in flight (besides /metrics)")
    return c


def test_draining_refuses_new_connections(env):
    # SIGTERM stops listening at once: while an accepted request is still
    # open (its body half sent, so the drain waits for it), a new connection
    # is refused (clients retry elsewhere) instead of sitting in the backlog
    # to be reset at the end; the open request is then answered.
    s = start(env, "refuse")
    png = galaxy_png(4242)
    try:
        with half_sent_classify(s, png) as c:
            s.send_signal(signal.SIGTERM)

            def refused():
                try:
                    socket.create_connection((s.host, s.port), timeout=2).close()
                except ConnectionRefusedError:
                    return True
                except ConnectionResetError:   # the SYN met the socket as it stopped listening
                    pass
                return False
            wait_for(refused, 10, "a refused connection after SIGTERM")
            assert s.proc.poll() is None, "galaxyd exited before its open request was answered"
            c.sendall(png[10:])
            ans = read_answer(c, 30)
            assert ans is not None and ans.status == 200, f"the open request: {ans!r}"
        rc = s.proc.wait(60)
        assert rc == 0, f"galaxyd exited {rc} after SIGTERM:\n{s.log()[-2000:]}"
    finally:
        s.stop()


def test_drain_timeout_gives_up(env):
    # A request that never completes (its body half sent, the connection
    # watchdog far away) cannot hold a stop forever: after the drain timeout
    # (--deadline-ms + 5 s) galaxyd says so and exits 0 without freeing what
    # its models use (on a device, a job may still be running).
    s = start(env, "give-up", ["--deadline-ms", "1000", "--conn-timeout", "120"])
    try:
        with half_sent_classify(s, galaxy_png(4343)):
            t0 = time.monotonic()
            rc = s.stop()   # SIGTERM
            took = time.monotonic() - t0
        log = s.log()
        assert rc == 0, f"galaxyd exited {rc}:\n{log[-2000:]}"
        assert 5.5 < took < 30, f"stopped {took:.1f} s after SIGTERM (drain timeout 6 s)"
        assert "1 request(s) still unanswered after 6000 ms" in log, log[-2000:]
        assert "stopped without waiting for the unanswered request(s)" in log, log[-2000:]
    finally:
        s.stop()


def test_reload_under_load(env, spec, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    target = models / f"{MODEL}.safetensors"
    shutil.copy(env["best"], target)
    s = Galaxyd(str(tmp_path / "srv"), str(models), env["web"], api_key_file=env["key_file"],
                extra=["--batch-delay-us", "1000"])
    stop = threading.Event()
    failures, versions, counts = [], set(), [0] * 6

    def client(k):
        with requests.Session() as sess:
            sess.headers.update({"Content-Type": "image/png", **auth()})
            i = 0
            while not stop.is_set():
                try:
                    r = sess.post(s.url("/v1/classify"), data=galaxy_png(3000 + k * 100 + i % 5), timeout=60)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        versions.add(r.json()["model_version"])
                except requests.RequestException as e:
                    failures.append(repr(e))
                counts[k] += 1
                i += 1

    ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    try:
        for t in ts:
            t.start()
        wait_for(lambda: min(counts) >= 2, 60, "every client under way")
        swaps = [env["last"], env["best"], env["last"], env["best"], env["last"]]
        for i, src in enumerate(swaps):
            shutil.copy(src, tmp_path / "tmp.safetensors")
            os.replace(tmp_path / "tmp.safetensors", target)
            before = list(counts)
            if i % 2 == 0:
                r = requests.post(s.url("/v1/admin/reload"), headers=auth(), timeout=60)
                spec.check(r)
                assert r.status_code == 200, r.text
            else:
                s.send_signal(signal.SIGHUP)
            # let each client finish a request or two on the new registry
            wait_for(lambda: all(c >= b + 2 for c, b in zip(counts, before)), 60, "requests after a reload")
        stop.set()
        for t in ts:
            t.join(60)
        assert not failures, f"{len(failures)} failed requests during reloads, e.g. {failures[:3]}"
        assert sum(counts) >= 30
        sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()   # noqa: E731
        assert versions == {sha(env["best"]), sha(env["last"])}, versions
        r = post_png(s, galaxy_png(1))
        assert r.json()["model_version"] == sha(env["last"])
    finally:
        stop.set()
        assert s.stop() == 0


def test_queue_full_503_at_once(env, spec):
    s = start(env, "qfull", ["--max-queue", "2"] + HOLD)
    try:
        held = run_threads_async([lambda i=i: post_png(s, galaxy_png(4000 + i)) for i in range(2)])
        wait_for(lambda: queue_depth(s) == 2, 20, "2 queued jobs")
        t0 = time.monotonic()
        r = post_png(s, galaxy_png(4100))
        body = spec.check(r)
        assert r.status_code == 503 and body["error"]["code"] == "queue_full", r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert time.monotonic() - t0 < 1.5, "a full queue must refuse at once"
        flat = [0.5] * (3 * 32 * 32)
        r = requests.post(s.url(f"/v2/models/{MODEL}/infer"), headers=auth(), timeout=30,
                          json={"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                            "data": flat}]})
        body = spec.check(r)
        assert r.status_code == 503 and isinstance(body["error"], str) and "Retry-After" in r.headers
        text = requests.get(s.url("/metrics"), timeout=10).text
        assert metric(text, "galaxyd_queue_rejected_total", {"model": MODEL}) >= 2
        # SIGTERM answers the two held jobs at once (a closing batcher does not wait)
        assert s.stop() == 0
        for r in held():
            assert not isinstance(r, Exception) and r.status_code == 200, r
            spec.check(r)
    finally:
        assert s.stop() == 0


def test_deadline_504(env, spec):
    s = start(env, "deadline", ["--deadline-ms", "300", "--max-batch", "64", "--batch-delay-us", "2000000"])
    try:
        t0 = time.monotonic()
        r = post_png(s, galaxy_png(5000))
        body = spec.check(r)
        assert r.status_code == 504 and body["error"]["code"] == "timeout", r.text
        assert time.monotonic() - t0 < 5
        assert requests.get(s.url("/healthz"), timeout=10).status_code == 200
    finally:
        assert s.stop() == 0


def run_threads_async(fns):
    """Starts fns in threads now; returns a function that joins them and
    returns their results (or exceptions) in order."""
    out = [None] * len(fns)

    def go(i, fn):
        try:
            out[i] = fn()
        except Exception as e:   # noqa: BLE001
            out[i] = e

    ts = [threading.Thread(target=go, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()

    def join():
        for t in ts:
            t.join(120)
        return out
    return join
