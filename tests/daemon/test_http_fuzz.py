"""A seeded fuzz campaign against one galaxyd serving all three kinds of model
(http_fuzz.py says what is generated and checked).

`make test` runs it for GX_HTTP_FUZZ_SECS (default 15 s) with
GX_HTTP_FUZZ_CLIENTS (default 2) concurrent clients seeded GX_HTTP_FUZZ_SEED
(default 1) and up, so each client's requests are reproducible; it runs again in
`make test-asan`, where galaxyd is the AddressSanitizer + UBSan build and
any memory error aborts the process. `make fuzz-http` is the long campaign
with a fresh seed. A failure names the seed and the request, and saves the
request as JSON beside the server's log (http_fuzz.reproduce sends it again).
"""
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from conftest import MODEL, SHARED_FLAGS, Galaxyd, tool
from http_fuzz import FuzzFailure, describe, parallel_campaign, save
from openapi_check import OpenAPI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sanitizer_marks import sanitizer_report  # noqa: E402

SECS = float(os.environ.get("GX_HTTP_FUZZ_SECS", "15"))
SEED = int(os.environ.get("GX_HTTP_FUZZ_SEED", "1"))
CLIENTS = int(os.environ.get("GX_HTTP_FUZZ_CLIENTS", "2"))


@pytest.fixture(scope="module")
def fuzz_server(env, cf_env, uda_env):
    """galaxyd with the tiny wavelet-mamba, cf-inn and uda checkpoints of the
    session, the shared server's limits, the API key and a database that
    holds a training run."""
    d = os.path.join(env["dir"], "fuzz")
    models = os.path.join(d, "models")
    os.makedirs(models)
    shutil.copy(os.path.join(env["models"], f"{MODEL}.safetensors"), models)
    shutil.copy(cf_env["ckpt"], os.path.join(models, "cf-inn.safetensors"))
    shutil.copy(uda_env["ckpt"], os.path.join(models, "uda.safetensors"))
    # The database of the session's cf-inn training run: the runs, metrics,
    # confusion and report routes then answer from real rows.
    db = os.path.join(d, "galaxyd.sqlite")
    shutil.copy(os.path.join(cf_env["dir"], "r.sqlite"), db)
    subprocess.run([tool("galaxy-train"), "eval", "--checkpoint", cf_env["ckpt"], "--data", env["h5"], "--db", db,
                    "--cf-n", "2"], check=True, timeout=300, capture_output=True)   # test rows: /v1/reports
    s = Galaxyd(os.path.join(d, "srv"), models, env["web"], extra=SHARED_FLAGS + ["--cf-cache-mb", "4"],
                api_key_file=env["key_file"], db=db)
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_http_fuzz_campaign(fuzz_server):
    # Its own OpenAPI instances: the route-coverage test of test_routes.py
    # counts what the deliberate tests answered, not what the fuzzer hit.
    try:
        fuzzers = parallel_campaign(OpenAPI, fuzz_server.base, SEED, SECS, CLIENTS)
    except FuzzFailure as e:
        shown = "(none: the server stopped answering)"
        if e.req:
            path = os.path.join(fuzz_server.workdir, f"fuzz-failure-seed{SEED + e.client}.json")
            save(e.req, path)
            shown = f"(saved to {path}):\n{describe(e.req)}"
        pytest.fail(f"client {e.client} (seed {SEED + e.client}) of {CLIENTS}: {e}\nrequest {shown}\n"
                    f"server log tail:\n{fuzz_server.log()[-2000:]}")
    statuses = sum((fz.statuses for fz in fuzzers), Counter())
    ok_ops = sum((fz.ok_ops for fz in fuzzers), Counter())
    sent = sum(fz.sent for fz in fuzzers)
    print(f"http fuzz: seeds {SEED}..{SEED + CLIENTS - 1} ({CLIENTS} clients), {sent} requests in {SECS:g} s, "
          f"statuses {sorted(statuses.items())}; 2xx by operation: {sorted(ok_ops.items())}")
    # Not vacuous: every client ran, and the campaign reached the models (2xx
    # of a POST) and the checks (4xx).
    assert all(fz.sent >= 10 for fz in fuzzers), [fz.sent for fz in fuzzers]
    assert any(k.startswith("POST /v1/") for k in ok_ops), ok_ops
    assert any(400 <= s < 500 for s in statuses), statuses
    rc = fuzz_server.stop()
    log = fuzz_server.log()
    assert rc == 0, f"galaxyd exited {rc} after the campaign:\n{log[-3000:]}"
    assert not sanitizer_report(log), f"sanitizer report in galaxyd's log:\n{log[-3000:]}"
