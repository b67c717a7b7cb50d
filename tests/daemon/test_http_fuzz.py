"""A seeded fuzz campaign against one galaxyd serving all three kinds of model
(http_fuzz.py says what is generated and checked).

`make test` runs it for GX_HTTP_FUZZ_SECS (default 15 s) with seed
GX_HTTP_FUZZ_SEED (default 1), so a run is reproducible; it runs again in
`make test-asan`, where galaxyd is the AddressSanitizer + UBSan build and
any memory error aborts the process. `make fuzz-http` is the long campaign
with a fresh seed. A failure names the seed and the request, and saves the
request as JSON beside the server's log (http_fuzz.reproduce sends it again).
"""
import os
import shutil

import pytest

from conftest import MODEL, SHARED_FLAGS, Galaxyd
from http_fuzz import FuzzFailure, HttpFuzzer, describe, save
from openapi_check import OpenAPI

SECS = float(os.environ.get("GX_HTTP_FUZZ_SECS", "15"))
SEED = int(os.environ.get("GX_HTTP_FUZZ_SEED", "1"))


@pytest.fixture(scope="module")
def fuzz_server(env, cf_env, uda_env):
    """galaxyd with the tiny wavelet-mamba, cf-inn and uda checkpoints of the
    session, the shared server's limits and the API key."""
    d = os.path.join(env["dir"], "fuzz")
    models = os.path.join(d, "models")
    os.makedirs(models)
    shutil.copy(os.path.join(env["models"], f"{MODEL}.safetensors"), models)
    shutil.copy(cf_env["ckpt"], os.path.join(models, "cf-inn.safetensors"))
    shutil.copy(uda_env["ckpt"], os.path.join(models, "uda.safetensors"))
    s = Galaxyd(os.path.join(d, "srv"), models, env["web"], extra=SHARED_FLAGS + ["--cf-cache-mb", "4"],
                api_key_file=env["key_file"])
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_http_fuzz_campaign(fuzz_server):
    # Its own OpenAPI instance: the route-coverage test of test_routes.py
    # counts what the deliberate tests answered, not what the fuzzer hit.
    fz = HttpFuzzer(OpenAPI(), fuzz_server.base, SEED)
    try:
        fz.campaign(SECS)
    except FuzzFailure as e:
        shown = "(none: the server stopped answering)"
        if e.req:
            path = os.path.join(fuzz_server.workdir, f"fuzz-failure-seed{SEED}.json")
            save(e.req, path)
            shown = f"(saved to {path}):\n{describe(e.req)}"
        pytest.fail(f"seed {SEED}, request {fz.sent + 1}: {e}\nrequest {shown}\n"
                    f"server log tail:\n{fuzz_server.log()[-2000:]}")
    print(f"http fuzz: seed {SEED}, {fz.sent} requests in {SECS:g} s, statuses {sorted(fz.statuses.items())}; "
          f"2xx by operation: {sorted(fz.ok_ops.items())}")
    # Not vacuous: the campaign reached the models (2xx) and the checks (4xx).
    assert fz.sent >= 20, f"only {fz.sent} requests in {SECS} s"
    assert any(200 <= s < 300 for s in fz.statuses), fz.statuses
    assert any(400 <= s < 500 for s in fz.statuses), fz.statuses
    rc = fuzz_server.stop()
    log = fuzz_server.log()
    assert rc == 0, f"galaxyd exited {rc} after the campaign:\n{log[-3000:]}"
    for mark in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert mark not in log, f"sanitizer report in galaxyd's log:\n{log[-3000:]}"
