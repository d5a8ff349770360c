"""Downloads stream to disk, retry what may pass next time, stop at the size limit and at refused addresses."""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from pathlib import Path

import pytest

from kairo.data.fetch import Fetcher, FetchError, redact

MiB = 1 << 20


def fetcher(**options) -> Fetcher:
    """Fast retries and a recorded sleep, loopback allowed as in `kairo run --local`."""
    waits: list[float] = []
    defaults = dict(local=True, retries=3, timeout=5.0, backoff=0.01, sleep=waits.append, log=lambda line: None)
    made = Fetcher(**{**defaults, **options})
    made.waits = waits  # type: ignore[attr-defined]
    return made


def test_a_file_is_saved_with_its_size_and_sha256(http, tmp_path):
    body = b'{"text": "hello"}\n' * 1000
    got = fetcher().fetch(http.serve("a.jsonl", body), tmp_path / "a.jsonl", limit=10 * MiB)
    assert got.path.read_bytes() == body
    assert (got.size, got.sha256) == (len(body), hashlib.sha256(body).hexdigest())


def test_5xx_is_retried_with_backoff_until_it_succeeds(http, tmp_path):
    get = fetcher()
    url = http.serve("flaky.jsonl", b'{"text": "x"}\n', fail_first=2)
    got = get.fetch(url, tmp_path / "f.jsonl", limit=MiB)
    assert got.size > 0 and http.hits("flaky.jsonl") == 3
    assert len(get.waits) == 2 and get.waits[1] > get.waits[0] * 0.9  # doubling, with jitter


def test_5xx_that_never_ends_is_a_transient_failure(http, tmp_path):
    url = http.serve("down.jsonl", b"", fail_first=100)
    with pytest.raises(FetchError) as caught:
        fetcher(retries=2).fetch(url, tmp_path / "d.jsonl", limit=MiB)
    assert caught.value.transient and "HTTP 503" in str(caught.value) and "after 3 attempts" in str(caught.value)
    assert http.hits("down.jsonl") == 3


def test_404_is_not_retried(http, tmp_path):
    with pytest.raises(FetchError) as caught:
        fetcher().fetch(http.url("missing.jsonl"), tmp_path / "m.jsonl", limit=MiB)
    assert not caught.value.transient and "HTTP 404" in str(caught.value)
    assert not (tmp_path / "m.jsonl").exists()


def test_retry_after_is_honoured(http, tmp_path):
    get = fetcher(backoff=5.0)
    url = http.serve("busy.jsonl", b'{"text": "x"}\n', fail_first=1, fail_status=429, fail_headers={"Retry-After": "0.25"})
    get.fetch(url, tmp_path / "b.jsonl", limit=MiB)
    assert http.hits("busy.jsonl") == 2 and get.waits == [0.25]


def test_a_timeout_is_retried(http, tmp_path):
    url = http.serve("slow.jsonl", b'{"text": "x"}\n', delay=0.6)
    get = fetcher(timeout=0.2, retries=1)
    with pytest.raises(FetchError) as caught:
        get.fetch(url, tmp_path / "s.jsonl", limit=MiB)
    assert caught.value.transient and "timed out" in str(caught.value)
    assert len(get.waits) == 1


def test_a_connection_cut_half_way_is_retried(http, tmp_path):
    body = b'{"text": "abcdefgh"}\n' * 5000
    url = http.serve("cut.jsonl", body, truncate_first=1)
    got = fetcher().fetch(url, tmp_path / "c.jsonl", limit=MiB)
    assert got.path.read_bytes() == body and http.hits("cut.jsonl") == 2


def test_a_file_over_the_size_limit_is_refused_from_its_content_length(http, tmp_path):
    url = http.serve("big.jsonl", b"x" * 5000)
    with pytest.raises(FetchError) as caught:
        fetcher().fetch(url, tmp_path / "big.jsonl", limit=1000)
    assert not caught.value.transient and "limits.maxDatasetBytes" in str(caught.value)


def test_a_body_without_length_is_cut_at_the_size_limit_and_leaves_nothing(http, tmp_path):
    url = http.serve("endless.jsonl", stream=lambda: (b"y" * 65536 for _ in range(100)))
    with pytest.raises(FetchError) as caught:
        fetcher().fetch(url, tmp_path / "endless.jsonl", limit=MiB)
    assert "larger than" in str(caught.value) and not caught.value.transient
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one


def test_memory_stays_flat_while_streaming_tens_of_megabytes(http, tmp_path):
    chunk = b"z" * MiB  # served again and again: the server allocates nothing per chunk
    url = http.serve("huge.bin", stream=lambda: (chunk for _ in range(40)), length=40 * MiB)
    tracemalloc.start()
    try:
        got = fetcher().fetch(url, tmp_path / "huge.bin", limit=100 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.size == 40 * MiB
    print(f"peak traced memory {peak / MiB:.2f} MiB for a 40 MiB download")
    assert peak < 6 * MiB, f"peak {peak / MiB:.1f} MiB while downloading 40 MiB"


def test_progress_in_bytes_is_written_during_the_download(http, tmp_path, monkeypatch):
    progress = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(progress))
    seen: list[str] = []

    def body():
        yield b"a" * 1000
        deadline = time.monotonic() + 5  # the client must report the first part before it gets the rest
        while time.monotonic() < deadline and not (progress.exists() and progress.read_text().startswith("1000/")):
            time.sleep(0.01)
        seen.append(progress.read_text() if progress.exists() else "")
        yield b"b" * 1000

    url = http.serve("p.bin", stream=body, length=2000)
    fetcher(progress_every=0).fetch(url, tmp_path / "p.bin", limit=MiB)
    assert seen == ["1000/2000"]
    assert progress.read_text() == "2000/2000"


def test_a_redirect_is_followed_and_checked(http, tmp_path):
    target = http.serve("real.jsonl", b'{"text": "x"}\n')
    url = http.redirect("moved.jsonl", target, status=301)
    got = fetcher().fetch(url, tmp_path / "r.jsonl", limit=MiB)
    assert got.size == 14 and http.hits("real.jsonl") == 1


def test_a_redirect_to_a_private_address_is_refused_mid_download(http, tmp_path):
    url = http.redirect("to-inside", "http://10.0.0.5/secrets.jsonl")
    with pytest.raises(FetchError) as caught:
        fetcher().fetch(url, tmp_path / "x.jsonl", limit=MiB)
    message = str(caught.value)
    assert not caught.value.transient
    assert "redirected from" in message and "'http://10.0.0.5/secrets.jsonl'" in message and "private" in message
    assert "network.allow" in message


def test_a_redirect_to_the_metadata_service_is_refused(http, tmp_path):
    url = http.redirect("meta", "http://169.254.169.254/latest/meta-data/iam/")
    with pytest.raises(FetchError, match="cloud metadata"):
        fetcher().fetch(url, tmp_path / "x", limit=MiB)


def test_loopback_is_refused_in_cluster_runs(http, tmp_path):
    url = http.serve("inside.jsonl", b"{}\n")
    with pytest.raises(FetchError, match="loopback"):
        fetcher(local=False).fetch(url, tmp_path / "x", limit=MiB)
    assert http.hits("inside.jsonl") == 0  # refused before connecting


def test_the_connection_goes_to_the_address_that_was_checked(http, tmp_path):
    calls: list[str] = []

    def resolver(host: str) -> list[str]:
        calls.append(host)  # a rebinding DNS would answer differently the second time: there is none
        return ["127.0.0.1"]

    url = f"http://datasets.example.test:{http.port}{http.path('named.jsonl')}"
    http.serve("named.jsonl", b'{"text": "x"}\n')
    fetcher(local=False, allow=["datasets.example.test"], resolver=resolver).fetch(url, tmp_path / "n", limit=MiB)
    assert calls == ["datasets.example.test"]
    assert http.route("named.jsonl").seen_headers[0]["Host"] == f"datasets.example.test:{http.port}"


def test_https_checks_the_certificate_against_the_name_not_the_pinned_address(https_server, tmp_path):
    tls = https_server
    url = tls.server.serve("secure.jsonl", b'{"text": "x"}\n')
    get = fetcher(resolver=lambda host: ["127.0.0.1"], tls=tls.client_context)
    assert get.fetch(url, tmp_path / "s.jsonl", limit=MiB).size == 14
    untrusted = fetcher(resolver=lambda host: ["127.0.0.1"])  # the system trust store does not know the cert
    with pytest.raises(FetchError, match="certificate") as caught:
        untrusted.fetch(url, tmp_path / "u.jsonl", limit=MiB)
    assert not caught.value.transient


def test_credentials_and_queries_never_reach_messages(http, tmp_path):
    assert redact("https://user:pw@host.example/a.parquet?sig=SECRET") == "https://host.example/a.parquet?…"
    url = f"http://user:pw@127.0.0.1:{http.port}{http.path('nope')}?token=SECRET"
    with pytest.raises(FetchError) as caught:
        fetcher().fetch(url, tmp_path / "x", limit=MiB)
    assert "SECRET" not in str(caught.value) and "pw" not in str(caught.value)


def test_credentials_in_the_url_are_sent_as_basic_auth(http, tmp_path):
    http.serve("private.jsonl", b'{"text": "x"}\n')
    url = f"http://reader:s3cret@127.0.0.1:{http.port}{http.path('private.jsonl')}"
    fetcher().fetch(url, tmp_path / "p", limit=MiB)
    assert http.route("private.jsonl").seen_headers[0]["Authorization"] == "Basic cmVhZGVyOnMzY3JldA=="


def test_only_http_and_https_are_fetched(tmp_path):
    with pytest.raises(FetchError, match="only http"):
        fetcher().fetch("file:///etc/passwd", Path(tmp_path / "x"), limit=MiB)


def test_a_public_looking_name_resolving_to_loopback_is_refused_then_allowed_by_the_allowlist(http, tmp_path):
    http.serve("named.jsonl", b'{"text": "x"}\n')
    url = f"http://datasets.example.com:{http.port}{http.path('named.jsonl')}"
    stub = lambda host: ["127.0.0.1"]  # noqa: E731 — a DNS answer pointing inside
    with pytest.raises(FetchError) as caught:
        fetcher(local=False, resolver=stub).fetch(url, tmp_path / "n", limit=MiB)
    assert "resolves to 127.0.0.1, a loopback address" in str(caught.value) and http.hits("named.jsonl") == 0
    allowed = fetcher(local=False, resolver=stub, allow=["127.0.0.0/8"])
    assert allowed.fetch(url, tmp_path / "n", limit=MiB).size == 14


def test_a_server_trickling_bytes_is_cut_off_at_the_minimum_rate(http, tmp_path):
    url = http.serve("trickle.jsonl", stream=lambda: (b"x" for _ in range(100)), chunk_delay=0.05, length=100)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetcher(timeout=0.5, retries=1, min_rate=1024).fetch(url, tmp_path / "t.jsonl", limit=MiB)
    assert caught.value.transient and time.monotonic() - started < 4
    assert "slower than the 1.0 KiB/s minimum (limits.minDownloadBytesPerSecond in the cluster config)" in str(
        caught.value)
    assert not (tmp_path / "t.jsonl").exists()


def test_the_overall_deadline_stops_a_download_that_every_read_keeps_alive(http, tmp_path):
    url = http.serve("slow.jsonl", stream=lambda: (b"x" for _ in range(1000)), chunk_delay=0.02, length=1000)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetcher(timeout=5, deadline=time.monotonic() + 1.0, deadline_seconds=1).fetch(url, tmp_path / "s", limit=MiB)
    assert caught.value.transient and time.monotonic() - started < 3
    assert "did not finish within 1 s (timeouts.downloadSeconds in the cluster config)" in str(caught.value)


def test_the_deadline_also_bounds_the_waits_between_attempts(http, tmp_path):
    url = http.serve("down.jsonl", b"", fail_first=100)
    get = fetcher(backoff=30.0, deadline=time.monotonic() + 5, deadline_seconds=5)
    with pytest.raises(FetchError, match="the next attempt would start after it"):
        get.fetch(url, tmp_path / "d", limit=MiB)
    assert get.waits == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_retry_after_that_is_not_a_number_falls_back_to_our_backoff(http, tmp_path, value):
    get = fetcher(backoff=0.5)
    url = http.serve("busy.jsonl", b'{"text": "x"}\n', fail_first=1, fail_status=503, fail_headers={"Retry-After": value})
    get.fetch(url, tmp_path / "b.jsonl", limit=MiB)
    assert len(get.waits) == 1 and 0.25 <= get.waits[0] <= 0.5


@pytest.mark.parametrize("value", ["-5", "12abc", "1e3"])
def test_a_content_length_that_is_not_a_size_is_bad_input_from_the_server(http, tmp_path, value):
    url = http.serve("odd.jsonl", stream=lambda: iter([b'{"text": "x"}\n']), headers={"Content-Length": value})
    with pytest.raises(FetchError) as caught:
        fetcher().fetch(url, tmp_path / "o.jsonl", limit=MiB)
    assert not caught.value.transient and http.hits("odd.jsonl") == 1
    assert f"the server sent 'Content-Length: {value}', which is not a size" in str(caught.value)
