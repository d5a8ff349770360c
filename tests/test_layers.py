"""Image layers are read, never run: files under /data come out, whiteouts apply, escapes are refused."""

from __future__ import annotations

import pytest

from kairo.oci.layers import LayerTooLarge, UnsafeLayer, extract
from tests.fixtures.oci_images import files_in, tar_layer


def layers_on_disk(tmp_path, *layers: bytes) -> list:
    paths = []
    for number, data in enumerate(layers, 1):
        path = tmp_path / f"layer-{number}.tar"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_only_files_under_data_are_taken(tmp_path):
    layer = tar_layer({"data/train.jsonl": b"a\n", "etc/passwd": b"root", "data/sub/eval.jsonl": b"b\n"})
    files = extract(layers_on_disk(tmp_path, layer), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"train.jsonl": b"a\n", "sub/eval.jsonl": b"b\n"}
    assert files == [tmp_path / "out" / "sub" / "eval.jsonl", tmp_path / "out" / "train.jsonl"]


def test_plain_tar_and_gzip_layers_are_both_read(tmp_path):
    plain = tar_layer({"data/a.csv": b"1"}, compress=False)
    gz = tar_layer({"data/b.csv": b"2"})
    extract(layers_on_disk(tmp_path, plain, gz), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"a.csv": b"1", "b.csv": b"2"}


def test_a_later_layer_replaces_a_file(tmp_path):
    extract(layers_on_disk(tmp_path, tar_layer({"data/a": b"old"}), tar_layer({"data/a": b"new"})), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"a": b"new"}


def test_a_whiteout_deletes_a_file_of_an_earlier_layer(tmp_path):
    first = tar_layer({"data/keep.jsonl": b"k", "data/old.jsonl": b"o"})
    second = tar_layer(whiteouts=("data/.wh.old.jsonl",))
    extract(layers_on_disk(tmp_path, first, second), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"keep.jsonl": b"k"}


def test_a_whiteout_deletes_a_whole_folder(tmp_path):
    first = tar_layer({"data/drafts/a": b"1", "data/drafts/b": b"2", "data/final": b"3"})
    extract(layers_on_disk(tmp_path, first, tar_layer(whiteouts=("data/.wh.drafts",))), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"final": b"3"}


def test_an_opaque_folder_hides_what_earlier_layers_put_in_it(tmp_path):
    first = tar_layer({"data/sub/old": b"1", "data/top": b"2"})
    second = tar_layer({"data/sub/new": b"3"}, whiteouts=("data/sub/.wh..wh..opq",))
    extract(layers_on_disk(tmp_path, first, second), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"sub/new": b"3", "top": b"2"}


def test_a_whiteout_only_deletes_from_layers_below(tmp_path):
    layer = tar_layer({"data/a": b"same layer"}, whiteouts=("data/.wh.a",))
    extract(layers_on_disk(tmp_path, layer), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"a": b"same layer"}


def test_files_are_written_readable_whatever_the_layer_says(tmp_path):
    extract(layers_on_disk(tmp_path, tar_layer({"data/a": b"x"})), tmp_path / "out")
    assert (tmp_path / "out" / "a").stat().st_mode & 0o777 == 0o644


def test_a_link_inside_data_becomes_a_copy(tmp_path):
    layer = tar_layer({"data/real.jsonl": b"rows"}, symlinks={"data/alias.jsonl": "real.jsonl",
                                                             "data/abs.jsonl": "/data/real.jsonl"},
                      hardlinks={"data/hard.jsonl": "data/real.jsonl"})
    extract(layers_on_disk(tmp_path, layer), tmp_path / "out")
    assert files_in(tmp_path / "out") == {n: b"rows" for n in ("abs.jsonl", "alias.jsonl", "hard.jsonl", "real.jsonl")}
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("layer, words", [
    (tar_layer({"data/../etc/passwd": b"x"}), "'..'"),
    (tar_layer({"/data/train.jsonl": b"x"}), "absolute path"),
    (tar_layer(symlinks={"data/secret": "/etc/shadow"}), "outside /data"),
    (tar_layer(symlinks={"data/secret": "../etc/shadow"}), "outside /data"),
    (tar_layer(symlinks={"data/secret": "../../../../etc/shadow"}), "above the image root"),
    (tar_layer({"etc/shadow": b"x"}, hardlinks={"data/secret": "etc/shadow"}), "outside /data"),
], ids=["dotdot", "absolute-name", "absolute-symlink", "relative-symlink", "symlink-above-root", "hardlink"])
def test_a_layer_reaching_outside_data_is_refused(tmp_path, layer, words):
    with pytest.raises(UnsafeLayer, match=words):
        extract(layers_on_disk(tmp_path, tar_layer({"data/ok": b"1"}), layer), tmp_path / "out")
    assert not (tmp_path / "out").exists() or files_in(tmp_path / "out") == {}


def test_links_that_escape_only_together_are_refused(tmp_path):
    # Read as written, data/escape → z/b/up/../../etc/x stays in /data; but z/b/up → ../.. is /data itself,
    # so followed link by link it reaches /etc/x.
    layer = tar_layer({"data/z/b/file": b"x"}, symlinks={"data/z/b/up": "../..", "data/escape": "z/b/up/../../etc/x"})
    with pytest.raises(UnsafeLayer, match="outside /data|above the image root"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out")


def test_a_write_through_a_link_is_refused(tmp_path):
    first = tar_layer({"data/real/x": b"1"}, symlinks={"data/link": "real"})
    second = tar_layer({"data/link/y": b"2"})
    with pytest.raises(UnsafeLayer, match="through the link"):
        extract(layers_on_disk(tmp_path, first, second), tmp_path / "out")


def test_data_itself_as_a_link_is_refused(tmp_path):
    with pytest.raises(UnsafeLayer, match="must be a folder"):
        extract(layers_on_disk(tmp_path, tar_layer(symlinks={"data": "/etc"})), tmp_path / "out")


def test_more_than_the_size_cap_is_refused(tmp_path):
    layer = tar_layer({"data/a": b"x" * 600, "data/b": b"y" * 600})
    with pytest.raises(LayerTooLarge, match="exceed 1000 bytes"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out", max_bytes=1000)


def test_whole_archive_mode_takes_everything_but_still_refuses_escapes(tmp_path):
    ok = tar_layer({"weights/model.safetensors": b"w", "weights/config.json": b"{}"})
    extract(layers_on_disk(tmp_path, ok), tmp_path / "out", folder="")
    assert files_in(tmp_path / "out") == {"weights/model.safetensors": b"w", "weights/config.json": b"{}"}
    bad = tar_layer(symlinks={"weights/x": "/etc/passwd"})
    with pytest.raises(UnsafeLayer):
        extract(layers_on_disk(tmp_path, bad), tmp_path / "out2", folder="")


def test_a_file_that_is_not_a_tar_is_refused(tmp_path):
    path = tmp_path / "layer"
    path.write_bytes(b"not a tar at all")
    with pytest.raises(UnsafeLayer, match="not a tar"):
        extract([path], tmp_path / "out")


# -- Kaito's model images: the folder may be a link, and the caller picks the files ------------------------

WEIGHTS = "workspace/tfs/weights"


@pytest.mark.parametrize("target", ["/workspace/weights", "../weights"], ids=["absolute", "relative"])
def test_a_link_at_the_folder_is_followed_inside_the_image_when_asked(tmp_path, target):
    base = tar_layer({"workspace/tfs/cli.py": b"code"}, symlinks={WEIGHTS: target})
    weights = tar_layer({"workspace/weights/config.json": b"{}", "workspace/weights/model.safetensors": b"w"})
    extract(layers_on_disk(tmp_path, base, weights), tmp_path / "out", folder=WEIGHTS, follow_link=True)
    assert files_in(tmp_path / "out") == {"config.json": b"{}", "model.safetensors": b"w"}


def test_a_folder_link_is_still_refused_unless_asked(tmp_path):
    layer = tar_layer({"workspace/weights/model.safetensors": b"w"}, symlinks={WEIGHTS: "/workspace/weights"})
    with pytest.raises(UnsafeLayer, match="must be a folder"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out", folder=WEIGHTS)


def test_a_folder_that_replaced_the_link_in_a_later_layer_is_taken_as_it_is(tmp_path):
    first = tar_layer({"workspace/weights/old.safetensors": b"old"}, symlinks={WEIGHTS: "/workspace/weights"})
    second = tar_layer({f"{WEIGHTS}/model.safetensors": b"new"}, whiteouts=("workspace/tfs/.wh.weights",))
    extract(layers_on_disk(tmp_path, first, second), tmp_path / "out", folder=WEIGHTS, follow_link=True)
    assert files_in(tmp_path / "out") == {"model.safetensors": b"new"}


@pytest.mark.parametrize("target, words", [
    ("../../../../../etc", "above the image root"),
    ("/", "image root"),
], ids=["above-root", "root"])
def test_a_folder_link_leading_above_or_to_the_root_is_refused(tmp_path, target, words):
    layer = tar_layer({"etc/passwd": b"root"}, symlinks={WEIGHTS: target})
    with pytest.raises(UnsafeLayer, match=words):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out", folder=WEIGHTS, follow_link=True)
    assert not (tmp_path / "out").exists()


def test_a_followed_folder_still_refuses_links_that_escape_it(tmp_path):
    layer = tar_layer({"workspace/weights/model.safetensors": b"w"},
                      symlinks={WEIGHTS: "/workspace/weights", "workspace/weights/config.json": "/etc/passwd"})
    with pytest.raises(UnsafeLayer, match="outside /workspace/weights"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out", folder=WEIGHTS, follow_link=True)


def test_keep_picks_the_files_written_and_only_those_count_against_the_cap(tmp_path):
    layer = tar_layer({"data/model.safetensors": b"w", "data/pytorch_model.bin": b"p" * 5000,
                       "data/sub/config.json": b"{}"}, symlinks={"data/alias.safetensors": "model.safetensors"})
    asked: list[str] = []

    def keep(name: str) -> bool:
        asked.append(name)
        return name.endswith(".safetensors")

    files = extract(layers_on_disk(tmp_path, layer), tmp_path / "out", max_bytes=2000, keep=keep)
    assert files_in(tmp_path / "out") == {"model.safetensors": b"w", "alias.safetensors": b"w"}
    assert len(files) == 2 and {"pytorch_model.bin", "sub/config.json"} <= set(asked)


def test_a_layer_of_more_entries_than_allowed_is_refused_before_any_is_written(tmp_path):
    layer = tar_layer({f"data/{n}": b"" for n in range(50)})
    with pytest.raises(UnsafeLayer, match="more than 40 entries"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out", max_entries=40)
    assert not (tmp_path / "out").exists()


def test_empty_files_count_their_headers_against_the_size_limit(tmp_path):
    layer = tar_layer({f"data/{n}": b"" for n in range(100)})  # no content at all, 100 entries
    with pytest.raises(LayerTooLarge, match="512-byte header"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out", max_bytes=100 * 512 - 1)
    assert extract(layers_on_disk(tmp_path, layer), tmp_path / "ok", max_bytes=101 * 512)


def test_a_later_layer_replaces_a_folder_with_a_file(tmp_path):
    first = tar_layer({"data/x/inner.jsonl": b"old"})  # the folder exists only through the file in it
    second = tar_layer({"data/x": b"now a file"})
    extract(layers_on_disk(tmp_path, first, second), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"x": b"now a file"}


def test_a_later_layer_replaces_a_declared_folder_with_a_file(tmp_path):
    first = tar_layer({"data/x/inner.jsonl": b"old"}, dirs=("data/x",))
    extract(layers_on_disk(tmp_path, first, tar_layer({"data/x": b"file"})), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"x": b"file"}


def test_a_name_longer_than_a_file_system_takes_is_refused(tmp_path):
    layer = tar_layer({"data/" + "n" * 300 + ".jsonl": b"x"})
    with pytest.raises(UnsafeLayer, match="a name of 306 bytes — longer than the 255"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out")


def test_a_path_thousands_of_folders_deep_is_refused(tmp_path):
    layer = tar_layer({"data/" + "d/" * 2000 + "f": b"x"})
    with pytest.raises(UnsafeLayer, match="2001 folders deep — more than the 64"):
        extract(layers_on_disk(tmp_path, layer), tmp_path / "out")


def test_long_names_outside_the_folder_do_not_matter(tmp_path):
    layer = tar_layer({"usr/" + "n" * 300: b"x", "data/a": b"1"})
    extract(layers_on_disk(tmp_path, layer), tmp_path / "out")
    assert files_in(tmp_path / "out") == {"a": b"1"}
