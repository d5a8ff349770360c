"""Dynamic batching, measured: the same chat requests sent by 16 concurrent clients, then one at a time,
to one `kairo-step serve` (tiny-llama-test + four adapters, on this machine's CPU) in one run.

Three figures, each against its baseline in the same run:
1. batching: 16 concurrent clients against one at a time (requests/s ratio; goal ≥ 3×);
2. mixed adapters: 16 clients spread over 4 adapters against 16 on one adapter (the mixed rows share
   `generate` calls through the adapters' stacked LoRA weights; goal ≥ 0.8×), and the same again on a second
   server with `--mixed-batches peft` (PEFT's own `adapter_names=` path, what kairo did before the stacks);
3. a switch under steady load: 16 clients loop on one adapter while the adapters file names a new one for
   it; failed requests (goal 0) and p95 latency in the seconds around the switch against the seconds before
   (goal within 2×).
The load average is printed beside the figures: the machine's other work moves them.
Run from the repository root: `python bench/serve.py` (or `make bench`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.fixtures.server's adapter builder

QUESTIONS = ["What is the capital of France?", "Name three colors.", "Tell me about the sea.", "Why is the sky blue?",
             "Write a sentence about a dog.", "What is two plus two?", "Hello!", "Describe the moon at night."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=48, help="requests in each run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each one run of either way")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per answer (all of them generated)")
    parser.add_argument("--min-ratio", type=float, default=0, help="exit 1 when the ratio is below this")
    parser.add_argument("--switch-seconds", type=float, default=6.0,
                        help="steady load before the switch, and measured after it")
    args = parser.parse_args(argv)

    from kairo.manifests.adapters import DeclaredAdapter, adapters_document
    from kairo.training.tinymodel import build_tiny_model
    from tests.fixtures.server import build_lora_adapter

    with tempfile.TemporaryDirectory(prefix="kairo-bench-") as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model")
        adapters = [build_lora_adapter(model_dir, Path(tmp) / f"adapter{i}", seed=i + 1) for i in range(5)]
        declared = [DeclaredAdapter(f"bench{i}", path=str(a), digest=f"sha256:{str(i) * 64}")
                    for i, a in enumerate(adapters[:4])]
        adapters_file = Path(tmp) / "adapters.json"
        adapters_file.write_text(adapters_document(declared))
        command = [sys.executable, "-m", "kairo.step", "serve", "--preset", "tiny-llama-test", "--model-dir",
                   str(model_dir), "--adapters-file", str(adapters_file), "--watch-interval", "0.2", "--device", "cpu",
                   "--max-batch-size", str(args.clients), "--max-tokens-cap", str(max(args.max_tokens, 64))]
        # One OpenMP thread: on a shared machine an oversubscribed OpenMP pool spins at its barriers and one
        # generate call of 50 ms can take 10 s (measured here), which buries what batching does.
        env = {**os.environ, "KAIRO_API_KEY": "", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        load_before = os.getloadavg()
        bodies = [{"model": "bench0", "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                   "max_tokens": args.max_tokens, "min_tokens": args.max_tokens, "temperature": 0}
                  for i in range(args.requests)]
        spread = [{**b, "model": f"bench{i % 4}"} for i, b in enumerate(bodies)]
        with _serving(command, env, Path(tmp) / "serve.log") as url:
            _run(url, bodies[: args.clients], args.clients)  # warm-up: first batches pay one-off costs
            # Alternate the two ways in rounds, so a neighbour's load on a shared machine hits both alike.
            one, many, ratios, calls, rows = Run(), Run(), [], 0.0, 0.0
            for _ in range(args.rounds):
                alone = _run(url, bodies, 1)
                calls_before, rows_before = _batches(url)
                together = _run(url, bodies, args.clients)
                calls_after, rows_after = _batches(url)
                calls, rows = calls + calls_after - calls_before, rows + rows_after - rows_before
                one.add(alone)
                many.add(together)
                ratios.append(together.rate / alone.rate)
            # 2. sixteen clients over four adapters against sixteen on one, alternating in rounds
            single, mixed, mixed_ratios = _mixed(url, bodies, spread, args.clients, args.rounds)
            # 3. a switch of bench0 to a new adapter under steady load
            switched = [DeclaredAdapter("bench0", path=str(adapters[4]), digest=f"sha256:{'9' * 64}"), *declared[1:]]
            switch = _switch_under_load(url, bodies[0], args.clients, adapters_file, adapters_document(switched),
                                        "sha256:" + "9" * 64, args.switch_seconds)
        adapters_file.write_text(adapters_document(declared))
        # 2 again, through PEFT's own mixed path: the figure before the stacked LoRA weights, in the same run
        with _serving([*command, "--mixed-batches", "peft"], env, Path(tmp) / "serve-peft.log") as url:
            _run(url, spread[: args.clients], args.clients)
            peft_single, peft_mixed, peft_ratios = _mixed(url, bodies, spread, args.clients, args.rounds)
        load_after = os.getloadavg()

    # The median round, not the total: a neighbour's burst of load on a shared machine spoils one round, not all.
    ratio = statistics.median(ratios)
    mean_batch = rows / max(calls, 1)
    print(f"serve bench: tiny-llama-test + 4 adapters on CPU ({env['OMP_NUM_THREADS']} OpenMP thread), {args.rounds} rounds of {args.requests} chat requests "
          f"({args.max_tokens} new tokens each)")
    print(f"  one at a time     {one.rate:7.2f} req/s   p50 {one.p50 * 1000:7.0f} ms   p95 {one.p95 * 1000:7.0f} ms")
    print(f"  {args.clients:2d} concurrent     {many.rate:7.2f} req/s   p50 {many.p50 * 1000:7.0f} ms   "
          f"p95 {many.p95 * 1000:7.0f} ms   (mean batch {mean_batch:.1f} requests per generate call)")
    print(f"  throughput ratio  {ratio:.2f}x  median of the rounds ({', '.join(f'{r:.2f}x' for r in ratios)}); "
          f"all rounds together {many.rate / one.rate:.2f}x; goal >= 3x")
    mixed_ratio = statistics.median(mixed_ratios)
    print(f"  {args.clients:2d} on 1 adapter   {single.rate:7.2f} req/s   p50 {single.p50 * 1000:7.0f} ms   "
          f"p95 {single.p95 * 1000:7.0f} ms")
    print(f"  {args.clients:2d} over 4 adapters {mixed.rate:6.2f} req/s   p50 {mixed.p50 * 1000:7.0f} ms   "
          f"p95 {mixed.p95 * 1000:7.0f} ms")
    print(f"  mixed-adapter ratio {mixed_ratio:.2f}x  median of the rounds ({', '.join(f'{r:.2f}x' for r in mixed_ratios)}); "
          f"all rounds together {mixed.rate / single.rate:.2f}x; goal >= 0.8x")
    print(f"  PEFT's own path (--mixed-batches peft): {peft_single.rate:.2f} req/s on 1 adapter, {peft_mixed.rate:.2f} "
          f"over 4: {statistics.median(peft_ratios):.2f}x  median of the rounds "
          f"({', '.join(f'{r:.2f}x' for r in peft_ratios)}); all rounds together {peft_mixed.rate / peft_single.rate:.2f}x")
    before, during = switch["before"], switch["during"]
    print(f"  switch under load  {switch['failed']} failed of {switch['sent']} requests; switched in "
          f"{switch['switch_s']:.2f} s; p95 {before.p95 * 1000:.0f} ms before ({len(before.latencies)} requests), "
          f"{during.p95 * 1000:.0f} ms during ({len(during.latencies)}): {during.p95 / before.p95:.2f}x; "
          f"goal 0 failed, within 2x")
    print(f"  load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in load_after)} after (1, 5, 15 min; {os.cpu_count()} cores)")
    return 1 if ratio < args.min_ratio else 0


@contextlib.contextmanager
def _serving(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`kairo-step serve` on a free port, as a process; its URL once ready, stopped after the block."""
    port = _free_port()
    with open(log_path, "wb") as log:
        server = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                  env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, server, log_path)
            yield url
        finally:
            server.terminate()
            server.wait(30)


def _mixed(url: str, bodies: list[dict], spread: list[dict], clients: int, rounds: int) -> tuple[Run, Run, list[float]]:
    """`clients` on one adapter and `clients` over four, alternating in rounds: both runs and each round's ratio."""
    single, mixed, ratios = Run(), Run(), []
    for _ in range(rounds):
        on_one = _run(url, bodies, clients)
        on_four = _run(url, spread, clients)
        single.add(on_one)
        mixed.add(on_four)
        ratios.append(on_four.rate / on_one.rate)
    return single, mixed, ratios


def _switch_under_load(url: str, body: dict, clients: int, adapters_file: Path, document: str, digest: str,
                       seconds: float) -> dict:
    """`clients` loop on `body` for `seconds`, then the adapters file names a new adapter for its model, and they
    go on for `seconds` more; latencies of the window before the write and of the window from it."""
    import threading

    from kairo.atomic import write_text

    records: list[tuple[float, float, bool]] = []  # (started, latency, ok)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            for _ in range(100_000):  # bounded
                if stop.is_set():
                    return
                started = time.perf_counter()
                try:
                    ok = http.post(f"{url}/v1/chat/completions", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                records.append((started, time.perf_counter() - started, ok))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    written = time.perf_counter()
    write_text(adapters_file, document)  # whole, by rename (the kubelet swaps a symlink: never half a file)
    while httpx.get(f"{url}/health").json().get("adapters", {}).get(body["model"]) != digest:
        time.sleep(0.05)
    switched = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(300)
    before = Run(seconds, [lat for t, lat, ok in records if ok and written - seconds <= t < written])
    during = Run(seconds, [lat for t, lat, ok in records if ok and written <= t < written + seconds])
    return {"before": before, "during": during, "failed": sum(not ok for _, _, ok in records), "sent": len(records),
            "switch_s": switched - written}


class Run:
    """Requests/s and latency percentiles of one run, or of several added together."""

    def __init__(self, seconds: float = 0.0, latencies: list[float] | None = None):
        self.seconds = seconds
        self.latencies = list(latencies or [])

    def add(self, other: Run) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _run(url: str, bodies: list[dict], clients: int) -> Run:
    def ask(body: dict) -> float:
        started = time.perf_counter()
        answer = http.post(f"{url}/v1/chat/completions", json=body)
        answer.raise_for_status()
        assert answer.json()["usage"]["completion_tokens"] == body["max_tokens"], answer.text
        return time.perf_counter() - started

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(timeout=300, limits=limits) as http, \
            concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(ask, bodies))
        return Run(time.perf_counter() - started, latencies)


def _batches(url: str) -> tuple[float, float]:
    """(generate calls, requests they answered) so far, from /metrics."""
    calls = rows = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("kairo_batch_size_count"):
            calls = float(line.split()[-1])
        elif line.startswith("kairo_batch_size_sum"):
            rows = float(line.split()[-1])
    return calls, rows


def _wait_ready(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready after {timeout:g}s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
