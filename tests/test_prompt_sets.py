"""Loading prompt sets: file formats, row layouts, transcripts, ids, errors, builtins."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from constitution.taxonomy import TAGS
from engine.sources import (
    BUILTIN_SETS,
    KINDS,
    PromptItem,
    PromptSetError,
    builtin,
    load_prompt_set,
    load_prompts,
    open_prompts,
    parse_transcript,
    readers,
)

DATA = Path(__file__).parent / "data" / "prompts"
REPO = Path(__file__).parent.parent


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def content_id(stem: str, messages: list[dict[str, str]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{stem}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(*rows: Any) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# The conversations of tests/data/prompts/layouts.{jsonl,json}, one per layout.
EXPECTED_LAYOUTS = [
    [{"role": "system", "content": "You are terse."}, user("How do I scan my own network for open ports?")],
    [user("Plan a picnic."), assistant("Sure! Where?"), user("By the river.")],
    [user("What is the capital of France?")],
    [user("Tell me a joke.")],
    [user("How do I pick a lock?"), assistant("Why do you need to?"), user("I locked myself out.")],
    [user("Is it 10:30 yet? Note: Human: is a word.")],
    [user("Write a haiku about rain.")],
]


@pytest.fixture(autouse=True)
def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()


# --------------------------------------------------------------------------- files and layouts


@pytest.mark.parametrize("name", ["layouts.jsonl", "layouts.json"])
def test_every_layout_from_json_files(name: str) -> None:
    source = str(DATA / name)
    loaded = load_prompt_set(source)
    assert [item.messages for item in loaded.items] == EXPECTED_LAYOUTS
    assert loaded.dropped == 1  # the blank prompt
    first, _, france, joke, lock, *_ = loaded.items
    assert (first.id, first.category, first.kind) == ("c-1", "cyber", "harmful")
    assert (france.category, france.kind) == ("helpfulness", "benign")  # `tag` stands in for `category`
    assert joke.kind == "near_miss"
    assert lock.category == "nonviolent_crime"
    assert all(item.source == source for item in loaded.items)
    assert all(PromptItem.model_validate(item.model_dump()) == item for item in loaded.items)
    assert loaded.items[1].id == content_id("layouts", EXPECTED_LAYOUTS[1])


def test_csv_layouts_with_header_row() -> None:
    loaded = load_prompt_set(str(DATA / "layouts.csv"))
    messages = [item.messages for item in loaded.items]
    assert messages[:3] == EXPECTED_LAYOUTS[:3]
    assert messages[3] == [user("Write two lines:\nfirst, then second")]  # quoted field over two lines
    assert messages[4:] == EXPECTED_LAYOUTS[4:]
    assert loaded.dropped == 1
    first, second, france, *_ = loaded.items
    assert (first.id, first.category, first.kind) == ("c-1", "cyber", "harmful")
    assert (second.category, second.kind) == (None, None)  # empty cells are missing values
    assert second.id == content_id("layouts", EXPECTED_LAYOUTS[1])
    assert (france.category, france.kind) == ("helpfulness", "benign")


def test_txt_one_prompt_per_non_empty_line() -> None:
    items = load_prompts(str(DATA / "layouts.txt"))
    assert [item.messages for item in items] == [
        [user("What is the capital of France?")],
        [user("Human: rights are universal. Discuss.")],  # a plain line, not a transcript
        [user("How do I bake bread?")],
    ]
    assert all(item.category is None and item.kind is None for item in items)


def test_hh_rlhf_rows_keep_the_prompt_of_chosen() -> None:
    items = load_prompts(str(DATA / "hh.jsonl"))
    assert items[0].messages == [
        user("What are some cuss words in english?"),
        assistant("Here's an incomplete list."),
        user("What's your favorite one?"),
    ]
    assert items[1].messages == [user("What kind of noises did dinosaurs make?")]


def test_prompt_transcript_string_and_messages_ending_with_assistant(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.jsonl",
        jsonl(
            {"prompt": "\n\nHuman: Hi there\n\nAssistant:"},
            {"prompt": [user("a"), assistant("b"), user("c"), assistant("d")]},
            {"messages": [], "prompt": " ", "text": ""},  # every layout column blank: dropped
            {"messages": None, "prompt": "", "chosen": "Human: q\n\nAssistant: a"},  # blank columns passed over
        ),
    )
    loaded = load_prompt_set(path)
    assert [item.messages for item in loaded.items] == [
        [user("Hi there")],
        [user("a"), assistant("b"), user("c")],
        [user("q")],
    ]
    assert loaded.dropped == 1


def test_jsonl_lines_split_on_newlines_only(tmp_path: Path) -> None:
    text = '{"prompt": "a\u2028b\x85c"}\r\n{"prompt": "d"}\r\n{"prompt": 1}\n'
    with pytest.raises(PromptSetError, match=r"u\.jsonl:3: prompt: expected a string"):
        load_prompts(write(tmp_path, "u.jsonl", text))
    items = load_prompts(write(tmp_path, "v.jsonl", text.rsplit("\r\n", 1)[0]))
    assert [item.messages for item in items] == [[user("a\u2028b\x85c")], [user("d")]]


def test_extra_message_keys_are_ignored_and_integer_ids_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "p.jsonl", jsonl({"id": 7, "messages": [{"role": "user", "content": "x", "name": "bob"}]}))
    [item] = load_prompts(path)
    assert (item.id, item.messages) == ("7", [user("x")])


# --------------------------------------------------------------------------- transcripts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "\n\nHuman: What's a good way to ...?\n\nAssistant: I'd suggest...\n\nHuman: And then?\n\nAssistant: ...",
            [user("What's a good way to ...?"), assistant("I'd suggest..."), user("And then?"), assistant("...")],
            id="multi-turn",
        ),
        pytest.param(
            "Human: Note: Human: is a word. Time: 10:30\n\nAssistant: Noted: fine.",
            [user("Note: Human: is a word. Time: 10:30"), assistant("Noted: fine.")],
            id="colons-inside",
        ),
        pytest.param("   \n \tHuman:   padded  \n\n", [user("padded")], id="leading-whitespace"),
        pytest.param(
            "Human: I said Human: stop.\nAssistant: on the same paragraph is not a marker",
            [user("I said Human: stop.\nAssistant: on the same paragraph is not a marker")],
            id="mid-sentence-markers",
        ),
        pytest.param(
            "Human: one\n\nHuman: two\n\nAssistant: a\n\nAssistant: b\n\nHuman: three",
            [user("one\n\ntwo"), assistant("a\n\nb"), user("three")],
            id="merge-same-speaker",
        ),
        pytest.param("\r\n\r\nHuman: crlf\r\n\r\nAssistant: ok", [user("crlf"), assistant("ok")], id="crlf"),
        pytest.param("Hello\n\nHuman: hi", [], id="not-a-transcript"),
    ],
)
def test_parse_transcript(text: str, expected: list[dict[str, str]]) -> None:
    assert parse_transcript(text) == expected


@pytest.mark.parametrize(
    ("column", "text", "expected"),
    [
        (
            "transcript",
            "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
            [user("a"), assistant("b"), user("c")],
        ),
        ("chosen", "Human: Time: 10:30?\n\nAssistant: Yes.", [user("Time: 10:30?")]),
        ("text", " \n Human: x\n\nAssistant: y\n\nHuman: z", [user("x"), assistant("y"), user("z")]),
        ("prompt", "\n\nHuman: Human: is a word\n\nAssistant:", [user("Human: is a word")]),
    ],
)
def test_transcript_columns_drop_the_final_assistant_turn(
    tmp_path: Path, column: str, text: str, expected: list[dict[str, str]]
) -> None:
    [item] = load_prompts(write(tmp_path, "t.jsonl", jsonl({column: text})))
    assert item.messages == expected


def test_transcript_with_an_empty_final_human_turn_is_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", jsonl({"transcript": "Human: a\n\nAssistant: b\n\nHuman:  "}, {"prompt": "ok"}))
    loaded = load_prompt_set(path)
    assert [item.messages for item in loaded.items] == [[user("ok")]]
    assert loaded.dropped == 1


# --------------------------------------------------------------------------- datasets


def test_save_to_disk_dataset(tmp_path: Path) -> None:
    from datasets import Dataset

    folder = tmp_path / "plain"
    Dataset.from_dict(
        {
            "messages": [[user("a")], [user("b"), assistant("c"), user("d"), assistant("e")]],
            "category": ["privacy", None],
        }
    ).save_to_disk(str(folder))
    items = load_prompts(str(folder))
    assert [item.messages for item in items] == [[user("a")], [user("b"), assistant("c"), user("d")]]
    assert [item.category for item in items] == ["privacy", None]
    assert items[0].id == content_id("plain", [user("a")])
    assert items[0].source == str(folder)
    with pytest.raises(PromptSetError, match=r"plain:test: this folder holds a single dataset without splits"):
        load_prompts(f"{folder}:test")


def test_save_to_disk_dataset_dict_with_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "hh"
    DatasetDict(
        {
            "train": Dataset.from_dict({"chosen": ["\n\nHuman: train q\n\nAssistant: a"], "rejected": ["x"]}),
            "test": Dataset.from_dict({"chosen": ["\n\nHuman: test q\n\nAssistant: a"], "rejected": ["y"]}),
        }
    ).save_to_disk(str(folder))
    assert [item.messages for item in load_prompts(str(folder))] == [[user("train q")]]
    [test_item] = load_prompts(f"{folder}:test")
    assert test_item.messages == [user("test q")]
    assert test_item.source == f"{folder}:test"
    with pytest.raises(PromptSetError, match=r"no split 'tset'; did you mean 'test'\? \(splits: train, test"):
        load_prompts(f"{folder}:tset")


def test_dataset_row_errors_name_the_row(tmp_path: Path) -> None:
    from datasets import Dataset

    folder = tmp_path / "bad"
    Dataset.from_dict({"question": ["a", "b"]}).save_to_disk(str(folder))
    with pytest.raises(PromptSetError, match=r"bad: row 1: no prompt found.*columns found: 'question'"):
        load_prompts(str(folder))


def test_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(PromptSetError, match=r"notes: not a dataset folder saved with datasets' save_to_disk"):
        load_prompts(str(tmp_path / "notes"))


def test_hub_dataset_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[str, str]] = []

    def fake_load_dataset(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_dict(
            {"chosen": ["\n\nHuman: q1\n\nAssistant: a1", "\n\nHuman: q2\n\nAssistant: a2"]}
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = load_prompts("hf:Anthropic/hh-rlhf:test")
    assert calls == [("Anthropic/hh-rlhf", "test")]
    assert [item.messages for item in items] == [[user("q1")], [user("q2")]]
    assert {item.source for item in items} == {"hf:Anthropic/hh-rlhf:test"}
    assert items[0].id == content_id("hh-rlhf", [user("q1")])

    load_prompts("hf:Anthropic/hh-rlhf", limit=1)
    assert calls[-1] == ("Anthropic/hh-rlhf", "train")


def test_hub_failures_are_prompt_set_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(name: str, split: str) -> Any:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(PromptSetError, match=r"hf:someone/thing: could not load the hub dataset: ConnectionError"):
        load_prompts("hf:someone/thing")
    with pytest.raises(PromptSetError, match=r"expected hf:NAME\[:SPLIT\]"):
        load_prompts("hf:")


def test_importing_the_module_does_not_import_datasets() -> None:
    code = "import sys, engine.sources; print(sorted({'datasets', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- ids and limit


def test_ids_are_stable_across_reordering(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {i}"} for i in range(5)]
    forward = load_prompts(write(tmp_path, "set.jsonl", jsonl(*rows)))
    (tmp_path / "b").mkdir()
    backward = load_prompts(write(tmp_path, "b/set.jsonl", jsonl(*reversed(rows))))
    assert {item.id: item.messages for item in forward} == {item.id: item.messages for item in backward}
    assert [item.id for item in forward] == [item.id for item in reversed(backward)]
    assert all(item.id.startswith("set-") and len(item.id) == len("set-") + 12 for item in forward)


def test_rows_without_an_id_that_repeat_a_conversation_get_suffixes_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dups.jsonl",
        jsonl({"prompt": "same"}, {"id": "x", "prompt": "one"}, {"prompt": "same"}, {"prompt": "same"}),
    )
    ids = [item.id for item in load_prompts(path)]
    same = content_id("dups", [user("same")])
    assert ids == [same, "x", f"{same}-2", f"{same}-3"]


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        (
            "dups.jsonl",
            jsonl({"id": "x", "prompt": "one"}, {"id": "y", "prompt": "two"}, {"id": "x", "prompt": "three"}),
            r"dups\.jsonl:3: id 'x' is already used on line 1; ids must be unique",
        ),
        (
            "dups.jsonl",
            jsonl({"id": 7, "prompt": "a number"}, {"id": "7", "prompt": "the same id as text"}),
            r"dups\.jsonl:2: id '7' is already used on line 1",
        ),
        ("dups.csv", "id,prompt\nx,one\n\nx,two\n", r"dups\.csv:4: id 'x' is already used on line 2"),
        (
            "dups.json",
            json.dumps([{"id": "x", "prompt": "one"}, {"id": "x", "prompt": "two"}]),
            r"dups\.json: row 2: id 'x' is already used on row 1",
        ),
    ],
)
def test_a_repeated_id_is_refused_naming_both_rows(tmp_path: Path, name: str, text: str, pattern: str) -> None:
    with pytest.raises(PromptSetError, match=pattern):
        load_prompts(write(tmp_path, name, text))
    with pytest.raises(PromptSetError, match=pattern):
        open_prompts(str(tmp_path / name), limit=1)


def test_a_made_up_id_never_takes_an_id_a_row_gives(tmp_path: Path) -> None:
    same = content_id("c", [user("same")])
    later = write(tmp_path, "c.jsonl", jsonl({"prompt": "same"}, {"prompt": "other"}, {"id": same, "prompt": "x"}))
    with pytest.raises(
        PromptSetError, match=rf"c\.jsonl:3: id '{same}' is the id made for line 1, a row without an id"
    ):
        load_prompts(later)
    (tmp_path / "b").mkdir()
    earlier = write(
        tmp_path, "b/c.jsonl", jsonl({"id": f"{same}-2", "prompt": "x"}, {"prompt": "same"}, {"prompt": "same"})
    )
    with pytest.raises(PromptSetError, match=rf"c\.jsonl:3: this row has no id, and the id .*'{same}-2'.* line 1"):
        load_prompts(earlier)


def test_limit_is_checked_and_never_more_than_the_set(tmp_path: Path) -> None:
    path = write(tmp_path, "l.jsonl", jsonl({"prompt": "  "}, *({"prompt": "dup"} for _ in range(4))))
    everything = load_prompts(path)
    assert len(everything) == 4
    two = load_prompts(path, limit=2)
    assert len(two) == 2 and all(item in everything for item in two)
    assert load_prompts(path, limit=10) == everything
    assert load_prompts(path, limit=0) == []
    with pytest.raises(PromptSetError, match="limit must be 0 or more"):
        load_prompts(path, limit=-1)


# --------------------------------------------------------------------------- streaming


def test_stream_gives_what_load_gives_and_can_be_read_again(tmp_path: Path) -> None:
    rows = [{"prompt": "same"}, {"id": "x", "prompt": "one"}, {"prompt": "  "}, {"prompt": "same"}]
    rows += [{"id": f"r{i}", "prompt": f"q{i}"} for i in range(5)] + [{"prompt": "same"}]
    path = write(tmp_path, "s.jsonl", jsonl(*rows))
    for limit in (None, 0, 3, 100):
        stream = open_prompts(path, limit=limit)
        expected = load_prompts(path, limit=limit)
        assert list(stream) == expected and list(stream) == expected  # each iteration reads the file again
        assert len(stream) == stream.count == len(expected)
        assert list(stream.ids()) == [item.id for item in expected]
        assert stream.dropped == 1
    same = content_id("s", [user("same")])
    assert [item.id for item in open_prompts(path)][-1] == f"{same}-3"  # a late repeat still gets its suffix
    assert list(open_prompts("mixed")) == load_prompts("mixed")


def test_stream_checks_every_row_up_front_then_reads_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = [{"id": f"r{i}", "prompt": f"q{i}"} for i in range(50)]
    bad = write(tmp_path, "bad.jsonl", jsonl(*good, {"prompt": 1}))
    with pytest.raises(PromptSetError, match=r"bad\.jsonl:51: prompt: expected a string"):
        open_prompts(bad)  # the last row is bad: raised before any prompt is handed out
    with pytest.raises(PromptSetError, match=r"bad\.jsonl:51"):
        open_prompts(bad, limit=1)  # rows past the limit are checked too

    read: list[int] = []
    row_fields = readers.row_fields

    def counting(raw: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(raw.line)
        return row_fields(raw, *args, **kwargs)

    monkeypatch.setattr(readers, "row_fields", counting)
    stream = open_prompts(write(tmp_path, "good.jsonl", jsonl(*good)))
    assert len(read) == 50 and len(stream) == 50
    read.clear()
    prompts = iter(stream)
    assert next(prompts).id == "r0" and next(prompts).id == "r1"
    assert read == [1, 2]  # one row read per prompt asked for, not the whole file


def test_stream_of_a_saved_dataset(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"prompt": ["a", "b", "a"]}).save_to_disk(str(folder))
    stream = open_prompts(str(folder), limit=2)
    assert list(stream) == load_prompts(str(folder), limit=2)
    assert len(stream) == 2 and len(list(stream)) == 2
    assert [item.messages for item in open_prompts(str(folder))] == [[user("a")], [user("b")], [user("a")]]


# --------------------------------------------------------------------------- errors

BAD_JSONL = [
    ("malformed-json", '{"prompt": "ok"}\n{"prompt": "no end"\n', r"bad\.jsonl:2: not valid JSON"),
    ("not-an-object", '{"prompt": "ok"}\n\n["a list"]\n', r"bad\.jsonl:3: a row must be an object, got a list"),
    ("string-row", '"just a string"\n', r"bad\.jsonl:1: a row must be an object, got a string"),
    ("messages-type", '{"messages": {"role": "user"}}\n', r"bad\.jsonl:1: messages: expected a list.*got an object"),
    ("messages-bad-json", '{"messages": "[oops"}\n', r"bad\.jsonl:1: messages: a string here must be a JSON list"),
    ("message-not-object", '{"messages": ["hi"]}\n', r"bad\.jsonl:1: messages\[0\]: expected a \{role, content\}"),
    ("bad-role", '{"messages": [{"role": "human", "content": "x"}]}\n', r":1: messages\[0\]\.role: .*'human'"),
    ("missing-role", '{"messages": [{"content": "x"}]}\n', r":1: messages\[0\]\.role: must be one of .*missing"),
    ("content-type", '{"messages": [{"role": "user", "content": 3}]}\n', r":1: messages\[0\]\.content: .*a number"),
    (
        "late-system",
        '{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, '
        '{"role": "user", "content": "c"}]}\n',
        r":1: messages\[1\]: a system turn may only come first",
    ),
    (
        "ends-with-system",
        '{"messages": [{"role": "system", "content": "a"}, {"role": "assistant", "content": "b"}]}\n',
        r":1: messages: the conversation must end with a user turn",
    ),
    ("prompt-type", '{"prompt": 12}\n', r"bad\.jsonl:1: prompt: expected a string or a list.*got a number"),
    ("id-type", '{"id": ["a"], "prompt": "x"}\n', r"bad\.jsonl:1: id: expected a string, got a list"),
    ("id-bool", '{"id": true, "prompt": "x"}\n', r"bad\.jsonl:1: id: expected a string, got a boolean"),
    ("category-type", '{"category": 1, "prompt": "x"}\n', r"bad\.jsonl:1: category: expected a string, got a number"),
    ("tag-type", '{"tag": {}, "prompt": "x"}\n', r"bad\.jsonl:1: tag: expected a string, got an object"),
    ("kind-value", '{"kind": "evil", "prompt": "x"}\n', r"bad\.jsonl:1: kind: must be one of harmful, benign"),
    ("kind-typo", '{"kind": "near-miss", "prompt": "x"}\n', r":1: kind: .*not 'near-miss'; did you mean 'near_miss'\?"),
    (
        "category-typo",
        '{"prompt": "ok", "category": "cyber"}\n{"category": "violent_crimes", "prompt": "x"}\n',
        r"bad\.jsonl:2: category: 'violent_crimes' is not a tag of the taxonomy; did you mean 'violent_crime'\? "
        r"\(harm tags: violent_crime, .*; for benign prompts also helpfulness, honesty, general",
    ),
    ("tag-typo", '{"tag": "Helpfulness", "prompt": "x"}\n', r":1: tag: 'Helpfulness' is not a tag.*'helpfulness'\?"),
    (
        "category-and-tag",
        '{"category": "cyber", "tag": "privacy", "prompt": "x"}\n',
        r":1: category 'cyber' and tag 'privacy' disagree",
    ),
    (
        "no-layout",
        '{"prompt": "ok"}\n{"question": "x", "answer": "y"}\n',
        r"bad\.jsonl:2: no prompt found; expected one of: 'messages'.*'prompt'.*Human:.*"
        r"\(columns found: 'question', 'answer'\)",
    ),
    (
        "text-not-transcript",
        '{"text": "plain text"}\n',
        r"bad\.jsonl:1: no prompt found \('text' is not a transcript: it does not start with 'Human:'\)",
    ),
    ("empty", "\n  \n", r"bad\.jsonl: empty file"),
    (
        "all-dropped",
        '{"prompt": ""}\n{"prompt": "  "}\n',
        r"no prompts in .*bad\.jsonl \(2 rows with an empty prompt\)",
    ),
]


@pytest.mark.parametrize(("text", "pattern"), [p[1:] for p in BAD_JSONL], ids=[p[0] for p in BAD_JSONL])
def test_jsonl_errors_name_file_and_line(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(PromptSetError, match=pattern) as info:
        load_prompts(path)
    assert path in str(info.value)


BAD_CSV = [
    ("empty", "", r"bad\.csv: empty file"),
    ("header-only", "id,prompt\n", r"no prompts in .*bad\.csv"),
    ("too-many-fields", 'id,prompt\na,"two\nlines"\nb,x,extra\n', r"bad\.csv:4: 3 fields but the header has 2"),
    ("bad-kind-after-multiline", 'kind,prompt\n,"one\ntwo\nthree"\n\nevil,x\n', r"bad\.csv:6: kind: must be one of"),
    (
        "category-typo",
        "category,prompt\ncyber,a\nprivcy,b\n",
        r"bad\.csv:3: category: 'privcy' is not a tag.*'privacy'",
    ),
    ("huge-field", 'prompt\nok\n"' + "x" * 200_000 + '"\n', r"bad\.csv:3: not valid CSV: field larger than"),
    ("no-layout", "question,answer\nq,a\n", r"bad\.csv:2: no prompt found.*columns found: 'question', 'answer'"),
    ("bad-messages", 'messages\n"[{""role"": ""bot"", ""content"": ""x""}]"\n', r"bad\.csv:2: messages\[0\]\.role"),
    ("blank-lines", " \r\n \r\n", r"bad\.csv: empty file"),
    ("lone-cr-lines", 'id,prompt\ra,"x\ry"\rb,y,z\r', r"bad\.csv:4: 3 fields but the header has 2"),
]


@pytest.mark.parametrize(("text", "pattern"), [p[1:] for p in BAD_CSV], ids=[p[0] for p in BAD_CSV])
def test_csv_errors_name_file_and_line(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(PromptSetError, match=pattern):
        load_prompts(write(tmp_path, "bad.csv", text))


BAD_OTHER = [
    ("json-syntax", "bad.json", '[\n  {"prompt": "a"},\n  {"prompt": }\n]', r"bad\.json:3: not valid JSON"),
    ("json-not-list", "bad.json", '{"prompt": "a"}', r"bad\.json: expected a JSON list of rows, got an object"),
    ("json-empty-list", "bad.json", "[]", r"no prompts in .*bad\.json"),
    ("json-empty", "bad.json", " \n", r"bad\.json: empty file"),
    ("json-row", "bad.json", '[{"prompt": "a"}, 3]', r"bad\.json: row 2: a row must be an object, got a number"),
    ("json-row-type", "bad.json", '[{"prompt": "a", "kind": 1}]', r"bad\.json: row 1: kind: expected a string"),
    ("txt-empty", "bad.txt", "\n \n\n", r"bad\.txt: empty file"),
    ("not-utf8", "bad.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r"bad\.jsonl:2: not UTF-8 text"),
    (
        "json-not-utf8-after-bom",
        "bad.json",
        b'\xef\xbb\xbf[\n{"prompt": "a"},\n{"prompt": "caf\xe9"}]',
        r"bad\.json:3: not UTF-8 text \(byte 0xe9\)",
    ),
    (
        "not-utf8-after-bom",
        "bad.txt",
        b"\xef\xbb\xbfok\nfine\ncaf\xe9\n",
        r"bad\.txt:3: not UTF-8 text \(byte 0xe9\)",
    ),
    ("extension", "prompts.yaml", "prompt: x\n", r"prompts\.yaml: unknown file extension '\.yaml'.*\.jsonl, \.json"),
    ("no-extension", "prompts", "x\n", r"prompts: unknown file extension '\(none\)'"),
]


@pytest.mark.parametrize(("name", "text", "pattern"), [p[1:] for p in BAD_OTHER], ids=[p[0] for p in BAD_OTHER])
def test_other_file_errors(tmp_path: Path, name: str, text: str | bytes, pattern: str) -> None:
    with pytest.raises(PromptSetError, match=pattern):
        load_prompts(write(tmp_path, name, text))


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("missing/prompts.jsonl", r"^missing/prompts\.jsonl: no such file or folder$"),
        ("prompts.jsonl", r"^prompts\.jsonl: no such file or folder$"),
        ("redtem", r"^redtem: no such file or folder, nor a builtin prompt set; did you mean 'redteam'\?"),
        ("builtin:helpfull", r"^builtin:helpfull: not a builtin prompt set; did you mean 'helpful'\?"),
        (
            "builtin:zzz",
            r"^builtin:zzz: not a builtin prompt set \(builtins: redteam, helpful, eval-redteam, eval-benign, mixed\)",
        ),
    ],
)
def test_unknown_sources(source: str, pattern: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PromptSetError, match=pattern):
        load_prompts(source)


def test_error_attributes(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", '{"prompt": "a"}\n[]\n')
    with pytest.raises(PromptSetError) as info:
        load_prompts(path)
    assert (info.value.file, info.value.line, info.value.row) == (path, 2, None)


# --------------------------------------------------------------------------- the model


def test_prompt_item_is_frozen_and_strict() -> None:
    item = PromptItem(id="a", messages=[user("hi")], source="test")
    with pytest.raises(ValidationError):
        item.id = "b"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        PromptItem(id="a", messages=[user("hi")], source="test", extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="kind must be one of"):
        PromptItem(id="a", messages=[user("hi")], source="test", kind="evil")
    with pytest.raises(ValidationError, match="'cybr' is not a tag of the taxonomy; did you mean 'cyber'"):
        PromptItem(id="a", messages=[user("hi")], source="test", category="cybr")
    with pytest.raises(ValidationError, match="must end with a user turn"):
        PromptItem(id="a", messages=[user("hi"), assistant("yo")], source="test")
    with pytest.raises(ValidationError, match="empty"):
        PromptItem(id="a", messages=[], source="test")


# --------------------------------------------------------------------------- builtin sets


@pytest.fixture
def fake_builtins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the builtin sets at small files, so these tests do not depend on the shipped ones."""
    red = write(
        tmp_path,
        "redteam.jsonl",
        jsonl(*({"id": f"rt-{i}", "category": "cyber", "kind": "harmful", "prompt": f"r{i}"} for i in range(3))),
    )
    helpful = write(tmp_path, "helpful.jsonl", jsonl({"id": "hp-0", "kind": "benign", "prompt": "h0"}))
    monkeypatch.setitem(BUILTIN_SETS, "redteam", Path(red))
    monkeypatch.setitem(BUILTIN_SETS, "helpful", Path(helpful))


@pytest.mark.usefixtures("fake_builtins")
def test_builtin_names_and_mixed_interleaving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd" / "redteam").mkdir(parents=True)
    (tmp_path / "cwd" / "redteam" / "prompts.txt").write_text("local\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "cwd")  # a folder named "redteam" does not shadow the builtin...
    items = load_prompts("redteam")
    assert [item.id for item in items] == ["rt-0", "rt-1", "rt-2"]
    assert {item.source for item in items} == {"builtin:redteam"}
    assert load_prompts("builtin:redteam") == items
    with pytest.raises(PromptSetError, match=r"^\./redteam: not a dataset folder"):
        load_prompts("./redteam")  # ...which "./redteam" names
    mixed = load_prompts("mixed")
    assert [item.id for item in mixed] == ["rt-0", "hp-0", "rt-1", "rt-2"]
    assert [item.source for item in mixed] == ["builtin:redteam", "builtin:helpful", *["builtin:redteam"] * 2]
    assert {item.kind for item in load_prompts("builtin:mixed", limit=2)} == {"harmful", "benign"}


def test_a_missing_builtin_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(BUILTIN_SETS, "redteam", tmp_path / "gone.jsonl")
    with pytest.raises(PromptSetError, match=r"builtin:redteam: the builtin prompt file is missing"):
        load_prompts("builtin:redteam")


def _shipped(name: str) -> list[PromptItem]:
    path = builtin.BUILTIN_DIR / f"{name}.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not written yet")
    return load_prompts(name)


def test_shipped_redteam_set() -> None:
    items = _shipped("redteam")
    assert len(items) >= 200
    untagged = [item.id for item in items if item.category not in TAGS]
    assert not untagged, f"prompts without a taxonomy category: {untagged[:10]}"
    assert all(item.kind in KINDS for item in items)


def test_shipped_helpful_set() -> None:
    items = _shipped("helpful")
    assert len(items) >= 100
    assert any(item.kind == "near_miss" for item in items)
    assert all(item.category is None or item.category in TAGS for item in items)


def test_shipped_sets_are_well_formed() -> None:
    red, helpful = _shipped("redteam"), _shipped("helpful")
    mixed = load_prompts("mixed")
    assert len(mixed) == len(red) + len(helpful)
    for name in ("redteam", "helpful"):
        lines = builtin.BUILTIN_SETS[name].read_text(encoding="utf-8").splitlines()
        ids = [json.loads(line).get("id") for line in lines if line.strip()]
        assert None not in ids, f"{name}: rows without an id"
        assert len(set(ids)) == len(ids), f"{name}: duplicate ids"
    assert len({item.id for item in mixed}) == len(mixed)
    for name, items in (("redteam", red), ("helpful", helpful)):
        assert any(sum(m["role"] == "user" for m in item.messages) > 1 for item in items), f"{name}: no multi-turn"
    for item in mixed:
        assert item.messages[-1]["role"] == "user" and item.messages[-1]["content"].strip()
        assert all(m["role"] != "system" for m in item.messages[1:])
