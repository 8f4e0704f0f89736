"""chatllm.inputs on real files, no model: summarize's sources, classify's texts, lines and CSV/TSV columns."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from chatllm import inputs
from chatllm.errors import UsageError
from chatllm.inputs import csv_column_items, gather_sources, input_lines, line_items, nonempty_items, probe_source, split_lines, whole_text


def refused(fn, *args, **kw) -> UsageError:
    """The UsageError fn raises (exit code 2)."""
    with pytest.raises(UsageError) as info:
        fn(*args, **kw)
    assert info.value.exit_code == 2
    return info.value


@pytest.fixture
def stdin(monkeypatch):
    """Pretend stdin is a pipe holding the given bytes."""
    def pipe(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        monkeypatch.setattr(inputs, "stdin_is_piped", lambda: True)
    return pipe


@pytest.fixture
def terminal(monkeypatch):
    """Pretend stdin is a terminal (nothing piped)."""
    monkeypatch.setattr(inputs, "stdin_is_piped", lambda: False)


# -- CSV / TSV columns ----------------------------------------------------------------------------


def test_csv_with_a_header_and_a_named_column(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text('id,review\n1,"Wonderful, I loved it"\n2,"Awful, a waste of money"\n')
    assert list(line_items(None, data, "review")) == [("Wonderful, I loved it", None), ("Awful, a waste of money", None)]
    assert list(line_items(None, data, " REVIEW ")) == [("Wonderful, I loved it", None), ("Awful, a waste of money", None)]


def test_tsv_with_a_numeric_column_reads_every_row_as_data(tmp_path):
    data = tmp_path / "reviews.tsv"
    data.write_text("great, really\t5\nbad\t1\nshort\n")
    assert list(line_items(None, data, "1")) == [("great, really", None), ("bad", None), ("short", None)]
    assert list(line_items(None, data, "2")) == [("5", None), ("1", None), ("", "the row has no column 2")]


def test_the_delimiter_follows_the_suffix_else_a_tab_in_the_first_line(tmp_path):
    tabbed = tmp_path / "data.txt"
    tabbed.write_text("a,b\tc\n")
    assert list(line_items(None, tabbed, "2")) == [("c", None)]
    csv_named = tmp_path / "data.csv"
    csv_named.write_text("a,b\tc\n")
    assert list(line_items(None, csv_named, "2")) == [("b\tc", None)]
    assert list(csv_column_items(iter(["x\ty"]), "2", "stdin")) == [("y", None)]


def test_a_missing_column_name_lists_the_header(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("id,review\n1,fine\n")
    err = refused(list, line_items(None, data, "nope"))
    assert err.message == f"{data} has no column named 'nope'" and err.hint == "its header row has: id, review"
    err = refused(list, line_items(None, data, "0"))
    assert err.message == "--column numbers start at 1" and err.hint == "for example --column 1"


def test_a_named_column_of_an_empty_file_yields_nothing(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert list(line_items(None, empty, "review")) == []
    assert refused(nonempty_items, line_items(None, empty, "review")).message == "the input has no text to classify"


# -- lines ----------------------------------------------------------------------------------------


def test_blank_lines_are_kept_as_empty_items_in_order(tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("first\n\n   \nlast\n")
    assert list(line_items(None, data)) == [("first", None), ("", None), ("   ", None), ("last", None)]
    rows = tmp_path / "rows.csv"
    rows.write_text("text\nfirst\n,\n\nlast\n")
    assert list(line_items(None, rows, "text")) == [("first", None), ("", None), ("", None), ("last", None)]


def test_crlf_and_a_bom_leave_no_trace(tmp_path):
    data = tmp_path / "win.csv"
    data.write_bytes(b"\xef\xbb\xbfid,review\r\n1,good\r\n2,bad\r\n")
    assert list(line_items(None, data)) == [("id,review", None), ("1,good", None), ("2,bad", None)]
    assert list(line_items(None, data, "review")) == [("good", None), ("bad", None)]


def test_split_lines_joins_lines_across_blocks():
    assert list(split_lines(["ab", "c\nd", "e\n\nf"])) == ["abc", "de", "", "f"]
    assert list(split_lines(["x\n"])) == ["x"]
    assert list(split_lines([])) == []


def test_leading_empty_items_are_held_and_replayed():
    items = nonempty_items(iter([("", None), (" ", None), ("text", None), ("", None)]))
    assert list(items) == [("", None), (" ", None), ("text", None), ("", None)]
    assert refused(nonempty_items, iter([("", None), ("  ", None)])).hint == "give one item per line"


def test_the_input_of_lines_and_its_name(tmp_path, terminal):
    lines, name = input_lines(["a", "b"], None)
    assert (list(lines), name) == (["a b"], "the argument")
    data = tmp_path / "x.txt"
    data.write_text("one\n")
    assert input_lines(["ignored"], data)[1] == str(data)
    err = refused(input_lines, None, None)
    assert err.message == "no lines to classify" and "chatllm sentiment --lines" in err.hint


def test_lines_from_stdin(stdin):
    stdin(b"one\r\ntwo\n")
    lines, name = input_lines(None, None)
    assert (list(lines), name) == (["one", "two"], "stdin")


def test_a_missing_file_is_refused_at_once_not_when_read(tmp_path):
    err = refused(line_items, None, tmp_path / "nope.txt", "review")
    assert err.message == f"no such file: {tmp_path / 'nope.txt'}"


def test_binary_lines_are_refused(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc\x00\x01def\n")
    assert "looks like binary data" in refused(list, line_items(None, data)).message


# -- one whole text -------------------------------------------------------------------------------


def test_whole_text_drops_only_the_final_newline(tmp_path):
    data = tmp_path / "t.txt"
    data.write_bytes(b"line one\r\nline two\r\n")
    assert whole_text(None, data) == "line one\nline two"
    assert whole_text(["I", "loved", "it"], data) == "I loved it"


def test_whole_text_refusals(tmp_path, terminal):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert refused(whole_text, None, empty).message == f"{empty} is empty"
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)))
    assert refused(whole_text, None, binary).message == f"{binary} looks like binary data (it has NUL bytes)"
    assert refused(whole_text, ["  "], None).message == "the text is empty"
    assert refused(whole_text, None, None).message == "no text to classify"


def test_whole_text_from_stdin_warns_once_for_bad_utf8(stdin):
    stdin(b"caf\xe9\n")
    warnings: list[str] = []
    assert whole_text(None, None, warnings.append) == "caf\ufffd"
    assert warnings == ["stdin is not valid UTF-8; undecodable bytes were replaced with U+FFFD"]


# -- summarize's sources --------------------------------------------------------------------------


def test_a_file_is_probed_then_read_again_in_blocks(tmp_path):
    data = tmp_path / "notes.txt"
    data.write_bytes(b"\xef\xbb\xbfhello\r\nw\xe9rld\r\n")
    warnings: list[str] = []
    source = probe_source(str(data), warnings.append)
    assert (source.name, warnings) == (str(data), [])  # a file warns when it is read, not when probed
    assert source.size_hint is not None and 10 <= source.size_hint <= 20
    assert "".join(source.blocks(warnings.append)) == "hello\nw\ufffdrld\n"
    assert len(warnings) == 1 and "not valid UTF-8" in warnings[0]
    assert "".join(source.blocks()) == "hello\nw\ufffdrld\n"  # and again


def test_empty_blank_binary_and_missing_sources_are_refused(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n \n\t\n")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)))
    for name in ("empty.txt", "blank.txt"):
        err = refused(probe_source, str(tmp_path / name))
        assert err.message == f"{tmp_path / name} is empty" and err.hint == "give a file with some text in it"
    assert "looks like binary data" in refused(probe_source, str(tmp_path / "binary.bin")).message
    assert refused(probe_source, str(tmp_path / "nope.txt")).message.startswith("no such file")
    assert refused(probe_source, str(tmp_path)).message == f"{tmp_path} is a directory"


def test_stdin_is_probed_once_and_its_blocks_replayed(stdin):
    stdin(b"\n\nfirst words \xff then more\n")
    warnings: list[str] = []
    source = probe_source("-", warnings.append)
    assert source.name == "stdin" and len(warnings) == 1  # stdin is read only once, so it warns at once
    assert "".join(source.blocks(warnings.append)) == "\n\nfirst words \ufffd then more\n"
    assert len(warnings) == 1


def test_empty_stdin_source(stdin):
    stdin(b"")
    err = refused(probe_source, "-")
    assert err.message == "stdin is empty" and err.hint == "pipe some text in: cat notes.txt | chatllm summarize"


def test_gather_sources_checks_every_input_first(tmp_path, terminal):
    good = tmp_path / "a.txt"
    good.write_text("some text\n")
    assert [s.name for s in gather_sources([str(good), str(good)])] == [str(good), str(good)]
    assert refused(gather_sources, [str(good), str(tmp_path / "missing.txt")]).message.startswith("no such file")
    assert refused(gather_sources, ["-", "-"]).message == "stdin (-) given more than once"
    assert refused(gather_sources, None).message == "nothing to summarize: no FILE and no piped input"


def test_gather_sources_reads_piped_stdin_without_a_file(stdin):
    stdin(b"piped text")
    [source] = gather_sources([])
    assert source.name == "stdin" and "".join(source.blocks()) == "piped text"


def test_inputs_imports_no_ui_or_model_library():
    code = ("import sys, chatllm.inputs\n"
            "sys.stdout.write(repr([m for m in ('typer', 'rich', 'llama_cpp', 'huggingface_hub') if m in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[]"
