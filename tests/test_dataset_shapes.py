"""Datasets as people bring them from the Hugging Face hub and elsewhere, through the real `kairo-step download`.

Each file is built here in the shape its hub dataset has (columns, nesting, file format), served from 127.0.0.1,
and must come out as sensible chat rows; what cannot be used is counted or explained, never a stack trace.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kairo import exitcodes
from tests.fixtures.http import csv_bytes, json_bytes, jsonl_bytes, parquet_bytes
from tests.test_download import Run

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
ASK = {"role": "user", "content": "What is the capital of France?"}
ANSWER = {"role": "assistant", "content": "Paris."}
QA = [ASK, ANSWER]


def qa(**columns: str) -> list[dict]:
    """Ten rows of one Q&A pair in the given columns ({'question': 'q', 'answer': 'a'} style)."""
    return [dict(columns)] * 10


@pytest.fixture
def run(tmp_path, monkeypatch) -> Run:
    monkeypatch.delenv("KAIRO_LOCAL", raising=False)
    monkeypatch.delenv("KAIRO_CLUSTER_CONFIG", raising=False)
    return Run(tmp_path)


def first(run: Run) -> list[dict]:
    return run.rows()[0]["messages"]


# The shapes of well-known datasets: (file name, body, shape recorded, the first row's messages).
HUB = {
    "philschmid/dolly-15k-oai-style": (
        "train.parquet", parquet_bytes([{"messages": [SYSTEM, *QA]}] * 10), "messages", [SYSTEM, *QA]),
    "HuggingFaceH4/no_robots": (
        "train.parquet",
        parquet_bytes([{"prompt": ASK["content"], "prompt_id": "a1", "messages": QA, "category": "Open QA"}] * 10),
        "messages", QA),
    "HuggingFaceH4/ultrachat_200k": (
        "train_sft.parquet", parquet_bytes([{"prompt": ASK["content"], "prompt_id": "u1", "messages": QA}] * 10),
        "messages", QA),
    "tatsu-lab/alpaca": (
        "alpaca_data.json",
        json.dumps([{"instruction": "Translate to French.", "input": "cat", "output": "chat",
                     "text": "Below is an instruction…### Response:\nchat"}] * 10, indent=4).encode(),
        "alpaca", [{"role": "user", "content": "Translate to French.\n\ncat"}, {"role": "assistant", "content": "chat"}]),
    "databricks/databricks-dolly-15k": (
        "databricks-dolly-15k.jsonl",
        jsonl_bytes([{"instruction": "Who wrote Hamlet?", "context": "", "response": "Shakespeare.",
                      "category": "open_qa"}] * 10),
        "dolly", [{"role": "user", "content": "Who wrote Hamlet?"}, {"role": "assistant", "content": "Shakespeare."}]),
    "ShareGPT (Vicuna)": (
        "sharegpt.json",
        json_bytes([{"id": "QWJhYvA_0", "conversations": [
            {"from": "system", "value": SYSTEM["content"]}, {"from": "human", "value": ASK["content"]},
            {"from": "gpt", "value": "Paris."}]}] * 10),
        "sharegpt", [SYSTEM, *QA]),
    "ShareGPT with user/assistant": (
        "chat.jsonl",
        jsonl_bytes([{"id": 7, "conversations": [{"from": "user", "value": ASK["content"]},
                                                  {"from": "assistant", "value": "Paris."}]}] * 10),
        "sharegpt", QA),
    "OpenAI fine-tuning (prompt/completion)": (
        "data.jsonl", jsonl_bytes(qa(prompt="Capital of France ->", completion=" Paris\n")), "prompt-completion",
        [{"role": "user", "content": "Capital of France ->"}, {"role": "assistant", "content": " Paris\n"}]),
    "question/answer CSV": (
        "faq.csv", csv_bytes(qa(question=ASK["content"], answer="Paris.")), "question-answer", QA),
    "plain text parquet": (
        "corpus.parquet", parquet_bytes([{"text": "Once upon a time.", "id": 1}] * 10), "text",
        [{"role": "assistant", "content": "Once upon a time."}]),
    "Open-Orca/OpenOrca": (
        "orca.parquet",
        parquet_bytes(qa(id="niv.1", system_prompt=SYSTEM["content"], question=ASK["content"], response="Paris.")),
        "question-response", [SYSTEM, *QA]),
    "meta-math/MetaMathQA": (
        "MetaMathQA-395K.json", json_bytes(qa(query="2 + 2?", response="4", type="GSM_Rephrased")), "query-response",
        [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]),
    "TRL conversational prompt/completion": (
        "train.jsonl", jsonl_bytes([{"prompt": [ASK], "completion": [ANSWER]}] * 10), "prompt-completion", QA),
    "TRL preference (chosen/rejected)": (
        "prefs.jsonl",
        jsonl_bytes([{"chosen": QA, "rejected": [ASK, {"role": "assistant", "content": "Lyon."}]}] * 10),
        "preference", QA),
    "Anthropic/hh-rlhf": (
        "train.jsonl",
        jsonl_bytes(qa(chosen="\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
                       rejected="\n\nHuman: What is the capital of France?\n\nAssistant: Lyon.")),
        "preference", QA),
    "Gemini tuning (contents/parts)": (
        "gemini.jsonl",
        jsonl_bytes([{"systemInstruction": {"role": "system", "parts": [{"text": SYSTEM["content"]}]},
                      "contents": [{"role": "user", "parts": [{"text": ASK["content"]}]},
                                   {"role": "model", "parts": [{"text": "Paris."}]}]}] * 10),
        "messages", [SYSTEM, *QA]),
    "LDJnr/Capybara": (
        "capybara.jsonl",
        jsonl_bytes([{"source": "General-Instruct", "conversation": [{"input": ASK["content"], "output": "Paris."}]}] * 10),
        "messages", QA),
}


@pytest.mark.parametrize("dataset", list(HUB))
def test_hub_dataset_shapes_become_chat_rows(run, http, dataset):
    name, body, shape, messages = HUB[dataset]
    assert run("--url", http.serve(name, body)) == exitcodes.OK
    assert run.output("rows") == str(len(run.rows())) and run.output("dropped") == "0"
    assert run.summary["shape"] == shape
    assert first(run) == messages


def test_openassistant_message_trees_become_one_conversation_a_tree_along_the_best_replies(run, http):
    def message(mid, parent, role, text, rank=None, deleted=False):
        return {"message_id": mid, "parent_id": parent, "user_id": "u", "text": text, "role": role, "lang": "en",
                "rank": rank, "deleted": deleted, "message_tree_id": "t"}

    rows = [message("p1", None, "prompter", "What is the capital of France?"),
            message("a1", "p1", "assistant", "Lyon.", rank=1),
            message("a2", "p1", "assistant", "Paris.", rank=0),
            message("p2", "a2", "prompter", "And of Italy?"),
            message("a3", "p2", "assistant", "Rome.", rank=0, deleted=True),
            message("p3", None, "prompter", "Hi!"),
            message("a4", "p3", "assistant", "Hello.")]
    assert run("--url", http.serve("oasst1.parquet", parquet_bytes(rows)),
               config={"shuffle_dataset": False, "train_test_split": 1}) == exitcodes.OK
    assert run.summary["shape"] == "message-tree"
    assert [r["messages"] for r in run.rows()] == [  # the last prompt of tree 1 lost its answer with a3
        QA, [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}]]


@pytest.mark.parametrize(("user", "assistant"), [("human", "gpt"), ("user", "bot"), ("User", "model"),
                                                 ("prompter", "assistant"), ("human", "ai")])
def test_role_names_seen_in_the_wild_map_onto_user_and_assistant(run, http, user, assistant):
    rows = [{"messages": [{"role": user, "content": ASK["content"]}, {"role": assistant, "content": "Paris."}]}] * 10
    assert run("--url", http.serve("roles.jsonl", jsonl_bytes(rows))) == exitcodes.OK
    assert first(run) == QA


def test_an_empty_system_turn_is_left_out_and_the_conversation_kept(run, http):
    rows = [{"messages": [{"role": "system", "content": None}, *QA]}] * 10
    assert run("--url", http.serve("chat.jsonl", jsonl_bytes(rows))) == exitcodes.OK
    assert first(run) == QA and run.output("dropped") == "0"


def test_content_parts_are_joined_also_from_parquet_structs(run, http):
    def parts(text):
        return [{"type": "text", "text": text, "image": None}]  # parquet gives every part every field

    rows = [{"messages": [{"role": "user", "content": parts(ASK["content"])},
                          {"role": "assistant", "content": parts("Paris.")}]}] * 10
    assert run("--url", http.serve("parts.parquet", parquet_bytes(rows))) == exitcodes.OK
    assert first(run) == QA


def test_a_conversation_ending_on_an_unanswered_question_is_dropped_and_counted(run, http):
    unanswered = {"messages": [SYSTEM, ASK]}
    cut_off = {"messages": [*QA, {"role": "user", "content": "And of Italy?"}]}
    rows = [{"messages": QA}] * 38 + [unanswered, cut_off]
    assert run("--url", http.serve("chat.jsonl", jsonl_bytes(rows))) == exitcodes.OK
    assert run.output("rows") == "38" and run.output("dropped") == "2"
    assert run.summary["dropped_reasons"] == {"no assistant turn": 1, "no assistant turn at the end": 1}


def test_turns_are_made_to_alternate_as_strict_chat_templates_require(run, http):
    row = {"conversations": [{"from": "gpt", "value": "Hi! How can I help?"},  # a greeting before any question
                             {"from": "human", "value": "Two questions."},
                             {"from": "human", "value": ASK["content"]},
                             {"from": "gpt", "value": "Paris."}]}
    assert run("--url", http.serve("sharegpt.json", json_bytes([row] * 10))) == exitcodes.OK
    assert first(run) == [{"role": "user", "content": f"Two questions.\n\n{ASK['content']}"}, ANSWER]


def test_tool_calls_are_dropped_with_a_reason_that_says_so(run, http):
    tool = {"messages": [ASK, {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
                         {"role": "tool", "content": "Paris"}, ANSWER]}
    assert run("--url", http.serve("tools.jsonl", jsonl_bytes([{"messages": QA}] * 19 + [tool]))) == exitcodes.OK
    assert run.summary["dropped_reasons"] == {"a turn with tool calls (function calling is not supported)": 1}


def test_a_conversation_written_by_pandas_to_csv_is_read(run, http):
    rows = [{"messages": str([SYSTEM, *QA])}] * 10  # Python's repr: single quotes
    assert run("--url", http.serve("export.csv", csv_bytes(rows))) == exitcodes.OK
    assert first(run) == [SYSTEM, *QA]


# Kaito's DatasetConfig column mapping, as a training config ConfigMap carries it.


def test_context_and_response_columns_name_custom_columns_whatever_their_case(run, http):
    rows = qa(Query=ASK["content"], Reply="Paris.", Source="faq")
    assert run("--url", http.serve("faq.jsonl", jsonl_bytes(rows)),
               config={"context_column": "query", "response_column": "reply"}) == exitcodes.OK
    assert first(run) == QA


def test_the_mapping_reaches_download_from_kaitos_configmap_as_written(run, http, tmp_path):
    configmap = tmp_path / "configmap.yaml"
    configmap.write_text("""\
apiVersion: v1
kind: ConfigMap
metadata: {name: my-qlora-params}
data:
  training_config.yaml: |
    training_config:
      DatasetConfig:
        shuffle_dataset: false
        train_test_split: 1
        context_column: "Context"
        response_column: "Response"
""")
    rows = qa(Context=ASK["content"], Response="Paris.", Category="faq")
    assert run("--url", http.serve("faq.csv", csv_bytes(rows)), "--config", str(configmap)) == exitcodes.OK
    assert first(run) == QA and run.output("eval-rows") == "0"


def test_messages_column_names_a_conversation_column(run, http):
    rows = [{"dialogue": [ASK, ANSWER], "id": i} for i in range(10)]
    assert run("--url", http.serve("d.parquet", parquet_bytes(rows)), config={"messages_column": "dialogue"}) == 0
    assert first(run) == QA


def test_kaitos_default_response_column_written_out_does_not_break_a_messages_dataset(run, http):
    rows = [{"messages": QA}] * 10
    assert run("--url", http.serve("chat.jsonl", jsonl_bytes(rows)), config={"response_column": "text"}) == 0
    assert first(run) == QA


def test_a_mapped_column_that_is_not_there_is_named_with_the_columns_found(run, http, capsys):
    url = http.serve("faq.jsonl", jsonl_bytes(qa(question="q", answer="a")))
    assert run("--url", url, config={"context_column": "prompt", "response_column": "answer"}) == 2
    assert "DatasetConfig.context_column is 'prompt' but there is no such column — columns found: ['question', " \
           "'answer']" in capsys.readouterr().err


def test_an_unknown_shape_lists_columns_and_accepted_shapes_without_a_traceback(run, http, capsys):
    url = http.serve("notes.parquet", parquet_bytes([{"title": "t", "body": "b", "tags": ["x"]}]))
    assert run("--url", url) == exitcodes.BAD_INPUT
    err = capsys.readouterr().err
    assert "no known dataset shape in the columns ['title', 'body', 'tags']" in err
    assert "ShareGPT" in err and "DatasetConfig.messages_column" in err and "Traceback" not in err


# Files as they arrive: wrappers, byte-order marks, line endings, compression, quoting.

ONE_QA = {"question": ASK["content"], "answer": "Paris."}


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("wrapped.json", json.dumps({"version": "1.0", "data": [ONE_QA] * 10}).encode()),
        ("wrapped-lines.json", json.dumps({"data": [ONE_QA] * 10}, indent=2).encode()),
        ("windows.jsonl", b"\xef\xbb\xbf" + jsonl_bytes([ONE_QA] * 10).replace(b"\n", b"\r\n") + b"\r\n\r\n\n"),
        ("train.jsonl.gz", gzip.compress(jsonl_bytes([ONE_QA] * 10))),
        ("train.jsonl.bz2", bz2.compress(jsonl_bytes([ONE_QA] * 10))),
        ("train.json.xz", lzma.compress(json_bytes([ONE_QA] * 10))),
        ("faq.tsv", b"question\tanswer\n" + f"{ASK['content']}\tParis.\n".encode() * 10),
        ("many-groups.parquet", parquet_bytes([ONE_QA] * 10, row_group_size=3)),
    ],
)
def test_file_variants_are_read(run, http, name, body):
    assert run("--url", http.serve(name, body) + "?download=true") == exitcodes.OK
    assert run.output("rows") == "10" and first(run) == QA


def test_json_lines_in_a_file_named_json_with_rows_longer_than_the_peek_are_read(run, http):
    long_answer = "Paris. " * 1000  # 7 kB: the first line does not end within the bytes the format is told from
    row = {"id": "x", "conversations": [{"from": "human", "value": ASK["content"]}, {"from": "gpt", "value": long_answer}]}
    assert run("--url", http.serve("sharegpt_gpt4.json", jsonl_bytes([row] * 10))) == exitcodes.OK
    assert run.summary["sources"][0]["format"] == "jsonl" and run.output("rows") == "10"


def test_one_object_in_a_json_file_is_one_row(run, http):
    assert run("--url", http.serve("one.json", json.dumps({"messages": QA}).encode())) == exitcodes.OK
    assert run.output("rows") == "1" and first(run) == QA


def test_csv_from_a_spreadsheet_with_quoted_lines_commas_and_a_byte_order_mark(run, http):
    body = b"\xef\xbb\xbf" + b'question,answer\r\n"Name two\r\ncolours, please","Red, and ""blue""."\r\n' * 10
    assert run("--url", http.serve("sheet.csv", body)) == exitcodes.OK
    assert first(run) == [{"role": "user", "content": "Name two\r\ncolours, please"},
                          {"role": "assistant", "content": 'Red, and "blue".'}]


def _damaged_parquet() -> bytes:
    whole = parquet_bytes([{"question": "q" * 50, "answer": "a"}] * 2000, row_group_size=100)
    return whole[:4] + b"\0" * 2000 + whole[2004:]  # the footer is intact, the first pages are not


DAMAGED_PARQUET = _damaged_parquet()
CUT_GZIP = gzip.compress(b"".join(json.dumps({"question": f"q{i}", "answer": f"a{i * 7919 % 10007}"}).encode()
                                  + b"\n" for i in range(5000)))[:20_000]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<!DOCTYPE html>\n<html><head><title>train.jsonl</title></head></html>\n", "an HTML page, not a data file"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n", "a Git LFS pointer"),
        (gzip.compress(parquet_bytes([ONE_QA])), "a compressed parquet file"),
        (b"not json at all\nnor this\n", "no JSON objects among the first rows — line 1 is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON: nested too deep at line 1"),
        (DAMAGED_PARQUET, "damaged or cut off part-way (Couldn't deserialize thrift"),
        (CUT_GZIP, "damaged or cut off part-way (Compressed file ended before the end-of-stream marker"),
    ],
)
def test_a_link_to_something_other_than_data_is_explained_naming_the_url(run, http, capsys, body, message):
    url = http.serve("train.jsonl", body)
    assert run("--url", url) == exitcodes.BAD_INPUT
    err = capsys.readouterr().err
    assert f"{url}: {message}" in err and "Traceback" not in err


def test_a_spreadsheet_saved_in_a_windows_code_page_is_refused_with_the_fix(run, http, capsys):
    url = http.serve("faq.csv", "question,answer\ncafé,crème\n".encode("cp1252"))
    assert run("--url", url) == exitcodes.BAD_INPUT
    assert f'{url}: not UTF-8 text (invalid continuation byte) — save it as UTF-8 (Excel: "CSV UTF-8"' in \
        capsys.readouterr().err


def test_a_lone_surrogate_from_a_cut_emoji_becomes_a_replacement_character(run, http):
    body = b'{"question": "Smile \\ud83d", "answer": "Paris."}\n' * 10
    assert run("--url", http.serve("cut.jsonl", body)) == exitcodes.OK
    assert first(run)[0] == {"role": "user", "content": "Smile \ufffd"}


# How files are served.


@pytest.mark.parametrize(
    ("disposition", "saved"),
    [('attachment; filename="faq.csv"', "raw/000-faq.csv"),
     ("attachment; filename=x.bin; filename*=UTF-8''f%C3%A4q.csv", "raw/000-f_q.csv"),
     ('inline; filename="../../etc/faq.csv"', "raw/000-faq.csv")],
)
def test_the_servers_file_name_tells_the_format_of_a_url_that_does_not(run, http, disposition, saved):
    url = http.serve("download", csv_bytes(qa(**ONE_QA)), headers={"Content-Disposition": disposition})
    assert run("--url", url + "?id=7&download=true") == exitcodes.OK
    assert first(run) == QA
    assert run.summary["sources"][0]["file"] == saved


def test_a_csv_content_type_tells_the_format_when_nothing_else_does(run, http):
    url = http.serve("api/export", csv_bytes(qa(**ONE_QA)), headers={"Content-Type": "text/csv; charset=utf-8"})
    assert run("--url", url + "?format=csv") == exitcodes.OK
    assert first(run) == QA and run.summary["sources"][0]["format"] == "csv"


def test_a_redirect_on_the_same_host_is_followed_and_the_final_name_tells_the_format(run, http):
    real = http.serve("blobs/faq.csv", csv_bytes(qa(**ONE_QA)))
    assert run("--url", http.redirect("resolve/main/faq", real + "?signature=abc") + "?download=true") == 0
    assert first(run) == QA and http.hits("blobs/faq.csv") == 1


def test_a_url_pasted_with_non_ascii_characters_is_sent_percent_encoded(run, http):
    http.serve("donn%C3%A9es/faq.jsonl", jsonl_bytes(qa(**ONE_QA)))  # what the server sees on the wire
    assert run("--url", http.url("données/faq.jsonl") + "?lang=français") == exitcodes.OK
    assert run.output("rows") == "10"


def test_a_body_without_content_length_is_read_to_its_end(run, http):
    body = jsonl_bytes([ONE_QA] * 10)
    assert run("--url", http.serve("stream.jsonl", stream=lambda: [body[:100], body[100:]])) == exitcodes.OK
    assert run.output("rows") == "10"


def test_a_chunked_response_is_read_whole(run):
    body = jsonl_bytes([ONE_QA] * 10)

    class Chunked(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 37):
                piece = body[start:start + 37]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Chunked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert run("--url", f"http://127.0.0.1:{server.server_address[1]}/faq.jsonl") == exitcodes.OK
    finally:
        server.shutdown()
        server.server_close()
    assert run.output("rows") == "10"


# Folders: a volume or a dataset image holding what datasets' save_to_disk or a hub clone left.


def test_a_save_to_disk_folder_is_read_without_its_metadata_files(run, tmp_path):
    import datasets

    datasets.Dataset.from_list(qa(**ONE_QA)).save_to_disk(str(tmp_path / "saved"))
    assert run("--volume-path", str(tmp_path / "saved")) == exitcodes.OK
    assert run.output("rows") == "10"
    assert [s["file"] for s in run.summary["sources"]] == ["raw/data-00000-of-00001.arrow"]


def test_a_folder_with_train_and_test_splits_trains_on_the_train_split_only(run, tmp_path, capsys):
    volume = tmp_path / "clone" / "data"
    volume.mkdir(parents=True)
    (volume / "train-00000-of-00001.parquet").write_bytes(parquet_bytes(qa(**ONE_QA)))
    (volume / "test-00000-of-00001.parquet").write_bytes(parquet_bytes([{"question": "held out", "answer": "x"}] * 3))
    assert run("--volume-path", str(tmp_path / "clone")) == exitcodes.OK
    assert run.output("rows") == "10"
    assert "leaving out data/test-00000-of-00001.parquet" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "split"),
    [("data/train-00000-of-00002.parquet", "train"), ("train_sft-00001.parquet", "train"), ("test/data.arrow", "test"),
     ("validation.jsonl", "validation"), ("dev.tsv", "dev"), ("training_data.csv", "train"),
     ("latest.jsonl", None), ("interval/contest.csv", None), ("alpaca_data.json", None)],
)
def test_the_split_a_file_name_tells(path, split):
    from kairo.data.datafiles import split_of

    assert split_of(path) == split


# The train step takes what download wrote.


@pytest.mark.slow
def test_training_accepts_the_normalised_rows_of_mixed_shapes(run, http, tiny_model_dir):
    from kairo.steps import train

    sharegpt = jsonl_bytes([{"conversations": [{"from": "system", "value": SYSTEM["content"]},
                                               {"from": "human", "value": ASK["content"]},
                                               {"from": "gpt", "value": "Paris."},
                                               {"from": "human", "value": "And of Italy?"},
                                               {"from": "gpt", "value": "Rome."}]}] * 6)
    hh = jsonl_bytes(qa(chosen="\n\nHuman: Hi!\n\nAssistant: Hello.", rejected="\n\nHuman: Hi!\n\nAssistant: Go."))
    assert run("--url", http.serve("a.jsonl", sharegpt), "--url", http.serve("b.jsonl", hh)) == exitcodes.OK
    (run.workdir / "model").mkdir()
    (run.workdir / "model" / "tiny-llama-test").symlink_to(tiny_model_dir, target_is_directory=True)
    config = run.tmp / "train.yaml"
    config.write_text("training_config:\n  LoraConfig: {r: 4, lora_alpha: 8}\n"
                      "  TrainingArguments: {max_steps: 2, per_device_train_batch_size: 2}\n"
                      "  TokenizerParams: {max_length: 64}\n")
    code = train.main(["--preset", "tiny-llama-test", "--method", "lora", "--workdir", str(run.workdir),
                       "--outputs", str(run.workdir / "outputs"), "--device", "cpu", "--config", str(config)])
    assert code == exitcodes.OK
    assert (run.workdir / "adapter" / "adapter_model.safetensors").is_file()


def test_a_tab_separated_file_named_nothing_useful_is_read_when_the_config_says_tsv(tmp_path):
    from kairo.data.datafiles import detect_format
    from kairo.training.config import DatasetSection

    path = tmp_path / "export.dat"
    path.write_text("question\tanswer\nWhat is 2+2?\tFour\n")
    forced = DatasetSection(dataset_extension="tsv").dataset_extension
    assert detect_format(path, forced=forced) == "tsv"
