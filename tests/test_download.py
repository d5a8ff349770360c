"""`kairo-step download`: URLs, volumes and formats in; checked chat rows, a digest and counts out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from kairo import exitcodes
from kairo.step import main as kairo_step
from tests.fixtures.http import csv_bytes, json_bytes, jsonl_bytes, parquet_bytes

ROWS = [{"question": f"What is {a} plus {b}?", "answer": f"{a} plus {b} is {a + b}."} for a in range(5) for b in range(4)]


class Run:
    """One download run in its own work directory; `outputs` holds what Argo would read."""

    def __init__(self, tmp_path: Path):
        self.workdir = tmp_path / "work"
        self.out = tmp_path / "outputs"
        self.tmp = tmp_path

    def __call__(self, *args: str, cluster: dict | None = None, config: dict | None = None, local: bool = True) -> int:
        argv = ["download", "--workdir", str(self.workdir), "--outputs", str(self.out),
                "--retries", "1", "--backoff", "0.01", "--timeout", "5", *args]  # a test's own flags win
        if local:
            argv.append("--local")
        if cluster is not None:
            path = self.tmp / "cluster.yaml"
            path.write_text(yaml.safe_dump(cluster))
            argv += ["--cluster-config", str(path)]
        if config is not None:
            path = self.tmp / "training_config.yaml"
            path.write_text(yaml.safe_dump({"training_config": {"DatasetConfig": config}}))
            argv += ["--config", str(path)]
        return kairo_step(argv)

    def output(self, name: str) -> str:
        return (self.out / name).read_text()

    def rows(self, name: str = "train.jsonl") -> list[dict]:
        return [json.loads(line) for line in (self.workdir / "data" / name).read_text().splitlines()]

    @property
    def summary(self) -> dict:
        return json.loads((self.workdir / "data" / "dataset.json").read_text())


@pytest.fixture
def run(tmp_path, monkeypatch) -> Run:
    monkeypatch.delenv("KAIRO_LOCAL", raising=False)
    monkeypatch.delenv("KAIRO_CLUSTER_CONFIG", raising=False)
    return Run(tmp_path)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("qa.parquet", parquet_bytes(ROWS, row_group_size=7)),
        ("qa.jsonl", jsonl_bytes(ROWS)),
        ("qa.json", json_bytes(ROWS)),
        ("qa.csv", csv_bytes(ROWS)),
    ],
)
def test_each_format_over_http_becomes_chat_rows(run, http, name, body):
    assert run("--url", http.serve(name, body)) == exitcodes.OK
    rows = run.rows()
    assert len(rows) == 20 and run.output("rows") == "20" and run.output("dropped") == "0"
    assert {"role": "assistant", "content": "2 plus 3 is 5."} in [m for r in rows for m in r["messages"]]
    assert run.summary["shape"] == "question-answer"
    assert run.output("digest") == "sha256:" + hashlib.sha256(body).hexdigest() == run.summary["digest"]
    assert (run.workdir / "data" / "raw" / f"000-{name}").read_bytes() == body


def test_a_hub_style_url_with_a_query_is_read_by_its_content(run, http):
    body = parquet_bytes(ROWS)
    http.serve("resolve/main/train-00000", body)  # no extension at all: the magic bytes tell
    assert run("--url", http.url("resolve/main/train-00000") + "?download=true") == exitcodes.OK
    assert run.summary["sources"][0]["format"] == "parquet"


def test_several_urls_are_concatenated_in_order_under_one_digest(run, http):
    first, second = jsonl_bytes(ROWS[:5]), csv_bytes(ROWS[5:])
    urls = [http.serve("a.jsonl", first), http.serve("b.csv", second)]
    assert run("--url", urls[0], "--url", urls[1], config={"shuffle_dataset": False, "train_test_split": 1}) == 0
    assert run.output("rows") == "20"
    assert [r["messages"][0]["content"] for r in run.rows()] == [row["question"] for row in ROWS]
    assert run.output("digest") == "sha256:" + hashlib.sha256(first + second).hexdigest()
    assert [s["rows"] for s in run.summary["sources"]] == [5, 15]


def test_urls_from_a_file(run, http, tmp_path):
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# the dataset\n{http.serve('a.jsonl', jsonl_bytes(ROWS))}\n\n{http.serve('b.jsonl', jsonl_bytes(ROWS))}\n")
    assert run("--urls-file", str(listing)) == exitcodes.OK
    assert run.output("rows") == "40"


def test_train_and_eval_split_follows_the_config(run, http):
    url = http.serve("qa.jsonl", jsonl_bytes(ROWS))
    assert run("--url", url, config={"train_test_split": 0.8, "shuffle_dataset": True, "shuffle_seed": 3}) == 0
    train, evaluation = run.rows("train.jsonl"), run.rows("eval.jsonl")
    assert (len(train), len(evaluation)) == (16, 4) and run.output("eval-rows") == "4"
    assert train[0]["messages"][0]["content"] != "What is 0 plus 0?"  # shuffled
    assert run.summary["train_rows"] == 16 and run.summary["eval_rows"] == 4


def test_without_a_config_there_is_no_eval_split_as_in_kaitos_templates(run, http):
    assert run("--url", http.serve("qa.jsonl", jsonl_bytes(ROWS))) == exitcodes.OK
    assert run.output("eval-rows") == "0" and not (run.workdir / "data" / "eval.jsonl").exists()


def test_an_unknown_shape_fails_as_bad_input_naming_columns_and_shapes(run, http, capsys):
    url = http.serve("notes.jsonl", jsonl_bytes([{"title": "a", "body": "b"}]))
    assert run("--url", url) == exitcodes.BAD_INPUT
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no known dataset shape in the columns ['title', 'body']" in last and "Alpaca" in last
    assert not (run.workdir / "data").exists()


def test_an_empty_dataset_fails(run, http, capsys):
    assert run("--url", http.serve("empty.jsonl", b"")) == exitcodes.BAD_INPUT
    assert "the dataset is empty" in capsys.readouterr().err


def test_too_many_dropped_rows_fail_and_a_few_are_counted(run, http, capsys):
    bad = [{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    good = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    assert run("--url", http.serve("few.jsonl", jsonl_bytes(good * 19 + bad))) == exitcodes.OK
    assert run.output("dropped") == "1" and run.summary["dropped_reasons"] == {"unknown role 'tool'": 1}
    assert run("--url", http.serve("many.jsonl", jsonl_bytes(good * 5 + bad * 5))) == exitcodes.BAD_INPUT
    assert "5 of 10 rows (50.0%) were dropped" in capsys.readouterr().err


def test_lines_that_are_not_json_count_as_dropped(run, http):
    body = jsonl_bytes(ROWS) + b"{not json\n"
    assert run("--url", http.serve("broken.jsonl", body)) == exitcodes.OK
    assert run.summary["dropped_reasons"] == {"not valid JSON": 1}


def test_the_row_limit_stops_a_runaway_dataset(run, http, capsys):
    url = http.serve("qa.jsonl", jsonl_bytes(ROWS))
    assert run("--url", url, cluster={"limits": {"maxRows": 10}}) == exitcodes.BAD_INPUT
    assert "more than 10 rows — limits.maxRows" in capsys.readouterr().err


def test_a_pathological_row_is_refused_before_it_is_read_whole(run, http, capsys):
    body = jsonl_bytes(ROWS[:3]) + jsonl_bytes([{"text": "x" * 50_000}])
    assert run("--url", http.serve("long.jsonl", body), cluster={"limits": {"maxRowChars": 1000}}) == 2
    assert "line 4 of" in capsys.readouterr().err


def test_a_row_over_the_character_limit_is_named(run, http, capsys):
    body = jsonl_bytes(ROWS[:3] + [{"question": "q", "answer": "a" * 1500}])
    assert run("--url", http.serve("long.jsonl", body), cluster={"limits": {"maxRowChars": 1000}}) == 2
    err = capsys.readouterr().err
    assert "row 4 of" in err and "1,501 characters — more than limits.maxRowChars (1,000)" in err


def test_the_size_limit_covers_all_files_together(run, http, capsys):
    body = jsonl_bytes(ROWS)
    urls = [http.serve("a.jsonl", body), http.serve("b.jsonl", body)]
    limit = len(body) + len(body) // 2
    assert run("--url", urls[0], "--url", urls[1], cluster={"limits": {"maxDatasetBytes": limit}}) == 2
    assert "limits.maxDatasetBytes" in capsys.readouterr().err


def test_5xx_after_the_retries_is_transient_and_leaves_no_data(run, http):
    good = http.serve("good.jsonl", jsonl_bytes(ROWS))
    down = http.serve("down.jsonl", b"", fail_first=100)
    assert run("--url", good, "--url", down) == exitcodes.TRANSIENT
    assert http.hits("down.jsonl") == 2
    assert not (run.workdir / "data").exists()
    assert list(run.workdir.iterdir()) == []  # not even a staging folder


def test_404_is_bad_input_and_not_retried(run, http):
    assert run("--url", http.serve("gone.jsonl", b"", status=404)) == exitcodes.BAD_INPUT
    assert http.hits("gone.jsonl") == 1


def test_a_failed_run_removes_the_data_of_an_earlier_run(run, http):
    assert run("--url", http.serve("qa.jsonl", jsonl_bytes(ROWS))) == exitcodes.OK
    assert run("--url", http.url("gone.jsonl")) == exitcodes.BAD_INPUT
    assert not (run.workdir / "data").exists()


@pytest.mark.parametrize(
    ("url", "kind"),
    [("http://169.254.169.254/latest/meta-data/", "cloud metadata"), ("http://10.0.0.5/data.jsonl", "private")],
)
def test_cluster_runs_refuse_urls_inside_the_cluster_or_the_cloud(run, url, kind, capsys):
    assert run("--url", url, local=False) == exitcodes.BAD_INPUT
    err = capsys.readouterr().err
    assert kind in err and "network.allow" in err


def test_a_name_resolving_to_loopback_is_refused_in_cluster_runs_and_allowed_by_the_allowlist(run, http, capsys):
    http.serve("qa.jsonl", jsonl_bytes(ROWS))
    url = f"http://localhost:{http.port}{http.path('qa.jsonl')}"
    assert run("--url", url, local=False) == exitcodes.BAD_INPUT
    assert "loopback" in capsys.readouterr().err and http.hits("qa.jsonl") == 0
    assert run("--url", url, local=False, cluster={"network": {"allow": ["127.0.0.0/8", "::1/128"]}}) == 0
    assert run.output("rows") == "20"


def test_kairo_local_in_the_environment_allows_loopback(run, http, monkeypatch):
    monkeypatch.setenv("KAIRO_LOCAL", "1")
    assert run("--url", http.serve("qa.jsonl", jsonl_bytes(ROWS)), local=False) == exitcodes.OK


def test_a_redirect_to_a_private_address_fails_the_step(run, http, capsys):
    url = http.redirect("sneaky.jsonl", "http://10.0.0.5/internal.jsonl")
    assert run("--url", url) == exitcodes.BAD_INPUT
    assert "10.0.0.5" in capsys.readouterr().err


def test_unchanged_data_is_reported_unless_forced(run, http):
    url = http.serve("qa.jsonl", jsonl_bytes(ROWS))
    digest = "sha256:" + hashlib.sha256(jsonl_bytes(ROWS)).hexdigest()
    assert run("--url", url, "--previous-digest", digest) == 0 and run.output("unchanged") == "true"
    assert run("--url", url, "--previous-digest", digest, "--force") == 0 and run.output("unchanged") == "false"
    assert run("--url", url, "--previous-digest", "sha256:0000") == 0 and run.output("unchanged") == "false"
    assert run("--url", url) == 0 and run.output("unchanged") == "false"


def test_outputs_for_argo(run, http):
    assert run("--url", http.serve("qa.jsonl", jsonl_bytes(ROWS))) == exitcodes.OK
    assert sorted(p.name for p in run.out.iterdir()) == ["digest", "dropped", "eval-rows", "rows", "tokens", "unchanged"]
    assert int(run.output("tokens")) == run.summary["tokens"] > 0


def test_progress_file_shows_the_bytes_downloaded(run, http, monkeypatch, tmp_path):
    progress = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(progress))
    body = jsonl_bytes(ROWS)
    assert run("--url", http.serve("qa.jsonl", body)) == exitcodes.OK
    assert progress.read_text() == f"{len(body)}/{len(body)}"


def test_a_volume_folder_gives_all_its_data_files(run, tmp_path):
    volume = tmp_path / "volume"
    (volume / "part").mkdir(parents=True)
    (volume / "a.jsonl").write_bytes(jsonl_bytes(ROWS[:4]))
    (volume / "part" / "b.parquet").write_bytes(parquet_bytes(ROWS[4:]))
    (volume / "README.md").write_text("not data")
    (volume / ".hidden.jsonl").write_text("{}")
    assert run("--volume-path", str(volume)) == exitcodes.OK
    assert run.output("rows") == "20"
    assert [s["file"] for s in run.summary["sources"]] == ["raw/a.jsonl", "raw/part/b.parquet"]


def test_dataset_path_picks_one_file_written_kaito_style(run, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "train.jsonl").write_bytes(jsonl_bytes(ROWS[:4]))
    (volume / "other.jsonl").write_bytes(jsonl_bytes(ROWS))
    assert run("--volume-path", str(volume), config={"dataset_path": "data/train.jsonl"}) == exitcodes.OK
    assert run.output("rows") == "4"


def test_dataset_path_may_not_leave_the_volume(run, tmp_path, capsys):
    volume = tmp_path / "volume"
    volume.mkdir()
    (tmp_path / "secret.jsonl").write_bytes(jsonl_bytes(ROWS))
    assert run("--volume-path", str(volume), config={"dataset_path": "../secret.jsonl"}) == exitcodes.BAD_INPUT
    assert "points outside the dataset folder" in capsys.readouterr().err


def test_a_volume_without_data_files_lists_what_it_holds(run, tmp_path, capsys):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "notes.txt").write_text("hello")
    assert run("--volume-path", str(volume)) == exitcodes.BAD_INPUT
    err = capsys.readouterr().err
    assert "no data files (parquet, jsonl, json, csv, arrow) — found: notes.txt" in err


def test_dataset_extension_must_match_the_content(run, http, capsys):
    url = http.serve("qa.data", parquet_bytes(ROWS))
    assert run("--url", url, config={"dataset_extension": "csv"}) == exitcodes.BAD_INPUT
    assert "dataset_extension is 'csv' but the file looks like parquet" in capsys.readouterr().err


def test_dataset_extension_reads_a_csv_without_its_name(run, http):
    assert run("--url", http.serve("export", csv_bytes(ROWS)), config={"dataset_extension": "csv"}) == 0
    assert run.output("rows") == "20"


def test_the_generic_templates_arguments_empty_sources_and_spaced_urls(run, http):
    # kairo-tuning passes every source flag (empty when unused) and all URLs in one --url value.
    digest = "sha256:" + hashlib.sha256(jsonl_bytes(ROWS) * 2).hexdigest()
    urls = f"{http.serve('a.jsonl', jsonl_bytes(ROWS))} {http.serve('b.jsonl', jsonl_bytes(ROWS))}"
    args = ["--url", urls, "--image", "", "--previous-digest", digest]
    assert run(*args, "--force=false") == exitcodes.OK
    assert run.output("rows") == "40" and run.output("unchanged") == "true"
    assert run(*args, "--force=true") == exitcodes.OK and run.output("unchanged") == "false"


@pytest.mark.parametrize("args", [[], ["--url", "", "--image", ""], ["--url", "http://a.example/x.jsonl", "--image", "r/x:1"]])
def test_exactly_one_source_is_needed(run, args, capsys):
    assert run(*args) == exitcodes.BAD_INPUT
    assert "give exactly one source of --url, --urls-file, --image, --volume-path" in capsys.readouterr().err


def test_conversations_in_parquet_keep_their_turns(run, http):
    rows = [{"conversations": [{"from": "human", "value": f"Say {i}."}, {"from": "gpt", "value": str(i)}]}
            for i in range(10)]
    assert run("--url", http.serve("chat.parquet", parquet_bytes(rows))) == exitcodes.OK
    assert run.summary["shape"] == "sharegpt"
    assert {"messages": [{"role": "user", "content": "Say 3."}, {"role": "assistant", "content": "3"}]} in run.rows()


def test_memory_stays_flat_from_download_to_split(run, http):
    import tracemalloc

    line = json.dumps({"text": "word " * 1200}).encode() + b"\n"  # 6 KB a row
    count = 5_000  # 30 MB in all
    url = http.serve("big.jsonl", stream=lambda: (line for _ in range(count)), length=len(line) * count)
    tracemalloc.start()
    try:
        assert run("--url", url) == exitcodes.OK
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.output("rows") == str(count)
    print(f"peak traced memory {peak / 2**20:.1f} MiB for a {len(line) * count / 2**20:.0f} MiB dataset")
    assert peak < 12 * 2**20


def test_a_metadata_host_name_is_refused_in_a_local_run_without_a_traceback(run, capsys):
    assert run("--url", "http://metadata.google.internal/computeMetadata/v1/x.jsonl") == exitcodes.BAD_INPUT
    assert "a cloud metadata address" in capsys.readouterr().err


def test_staging_folders_left_by_a_killed_run_are_removed_at_start(run, http):
    run.workdir.mkdir(parents=True)
    stale = run.workdir / ".data.k1ll3d.partial"
    (stale / "raw").mkdir(parents=True)
    (stale / "raw" / "000-big.jsonl").write_bytes(b"x" * 1000)
    assert run("--url", http.serve("qa.jsonl", jsonl_bytes(ROWS))) == exitcodes.OK
    assert not stale.exists() and sorted(p.name for p in run.workdir.iterdir()) == ["data"]


def test_a_negative_content_length_is_bad_input_not_a_retry(run, http, capsys):
    url = http.serve("odd.jsonl", stream=lambda: iter([jsonl_bytes(ROWS)]), headers={"Content-Length": "-5"})
    assert run("--url", url) == exitcodes.BAD_INPUT
    assert "which is not a size — a broken answer from the server" in capsys.readouterr().err
    assert http.hits("odd.jsonl") == 1


def test_a_download_slower_than_the_minimum_rate_is_retriable_and_names_the_rate(run, http, capsys):
    url = http.serve("slow.jsonl", stream=lambda: (b"{" for _ in range(200)), chunk_delay=0.02, length=200)
    argv = ["--url", url, "--timeout", "0.3"]
    assert run(*argv, cluster={"limits": {"minDownloadBytesPerSecond": 4096}}) == exitcodes.TRANSIENT
    assert "slower than the 4.0 KiB/s minimum (limits.minDownloadBytesPerSecond" in capsys.readouterr().err
