"""Loading, composition and the content hash."""

from __future__ import annotations

from pathlib import Path

import pytest

import constitution
from constitution import ConstitutionError
from tests.factories import WriteYaml, document, principle

EXAMPLE = {
    "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    "critique": "Nothing to change.",
}


def test_load_returns_frozen_validated_model(write_yaml: WriteYaml) -> None:
    c = constitution.load(write_yaml("a.yaml", document("a", [principle("p1", "hate")])))
    assert [p.id for p in c.principles] == ["p1"]
    assert c.principles[0].weight == 1.0
    with pytest.raises(Exception, match="frozen"):
        c.principles[0].weight = 2.0  # type: ignore[misc]


def test_hash_ignores_formatting_and_comments_but_not_content(tmp_path: Path, write_yaml: WriteYaml) -> None:
    a = constitution.load(write_yaml("a.yaml", document("a", [principle("p1")])))
    text = (tmp_path / "a.yaml").read_text()
    b_path = tmp_path / "b.yaml"
    b_path.write_text("# a comment\n" + text.replace("\n", "\n\n") + "\n# trailing\n")
    assert constitution.load(b_path).content_hash == a.content_hash
    changed = constitution.load(write_yaml("c.yaml", document("a", [principle("p1", critique_request="Other.")])))
    assert changed.content_hash != a.content_hash
    # an explicit default is the same content as an implicit one
    explicit = constitution.load(write_yaml("d.yaml", document("a", [principle("p1", weight=1.0, examples=[])])))
    assert explicit.content_hash == a.content_hash


def test_include_composes_in_order_and_records_sources(tmp_path: Path, write_yaml: WriteYaml) -> None:
    write_yaml("base.yaml", document("base", [principle("b1", "hate"), principle("b2", "privacy")]))
    top = write_yaml("top.yaml", document("top", [principle("t1")], include=["base.yaml"]))
    c = constitution.load(top)
    assert [p.id for p in c.principles] == ["b1", "b2", "t1"]
    assert c.include == []
    assert c.source_of("b1").endswith("base.yaml")
    assert c.source_of("t1").endswith("top.yaml")


def test_select_and_exclude_by_id_and_tag(write_yaml: WriteYaml) -> None:
    write_yaml(
        "base.yaml",
        document("base", [principle("b1", "hate"), principle("b2", "privacy"), principle("b3", "privacy", "cyber")]),
    )
    only_privacy = write_yaml(
        "s.yaml",
        document("s", [], include=[{"path": "base.yaml", "select": {"tags": ["privacy"]}, "exclude": {"ids": ["b3"]}}]),
    )
    assert [p.id for p in constitution.load(only_privacy).principles] == ["b2"]
    by_id = write_yaml("i.yaml", document("i", [], include=[{"path": "base.yaml", "select": {"ids": ["b3", "b1"]}}]))
    assert [p.id for p in constitution.load(by_id).principles] == ["b1", "b3"]


def test_select_unknown_id_suggests(write_yaml: WriteYaml) -> None:
    write_yaml("base.yaml", document("base", [principle("privacy-doxxing")]))
    top = write_yaml(
        "t.yaml", document("t", [], include=[{"path": "base.yaml", "exclude": {"ids": ["privacy-doxing"]}}])
    )
    with pytest.raises(ConstitutionError, match="did you mean 'privacy-doxxing'"):
        constitution.load(top)


def test_duplicate_id_across_files_names_both(write_yaml: WriteYaml) -> None:
    write_yaml("base.yaml", document("base", [principle("same")]))
    top = write_yaml("t.yaml", document("t", [principle("same")], include=["base.yaml"]))
    with pytest.raises(ConstitutionError) as err:
        constitution.load(top)
    (problem,) = err.value.problems
    assert problem.field == "principles[0].id" and "base.yaml" in problem.message and problem.line is not None


def test_include_cycle_and_self_include(write_yaml: WriteYaml) -> None:
    write_yaml("a.yaml", document("a", [principle("a1")], include=["b.yaml"]))
    b = write_yaml("b.yaml", document("b", [principle("b1")], include=["a.yaml"]))
    with pytest.raises(ConstitutionError, match="include cycle"):
        constitution.load(b)
    me = write_yaml("me.yaml", document("me", [principle("m1")], include=["me.yaml"]))
    with pytest.raises(ConstitutionError, match="include cycle"):
        constitution.load(me)


def test_diamond_include_of_same_principles_is_a_duplicate(write_yaml: WriteYaml) -> None:
    write_yaml("base.yaml", document("base", [principle("b1")]))
    write_yaml("left.yaml", document("left", [], include=["base.yaml"]))
    top = write_yaml("top.yaml", document("top", [principle("t1")], include=["left.yaml", "base.yaml"]))
    with pytest.raises(ConstitutionError) as err:
        constitution.load(top)
    (problem,) = err.value.problems  # one problem, not one per principle
    assert problem.field == "include[1]"
    assert "base.yaml is included twice: its principle 'b1' is already there through include[0]" in problem.message
    assert "left.yaml" in problem.message


def test_errors_in_included_file_are_reported_with_its_name(write_yaml: WriteYaml) -> None:
    write_yaml("bad.yaml", document("bad", [principle("b1", "hat")]))
    top = write_yaml("top.yaml", document("top", [principle("t1")], include=["bad.yaml"]))
    with pytest.raises(ConstitutionError) as err:
        constitution.load(top)
    text = str(err.value)
    assert "top.yaml" in text and "include[0]" in text
    assert "bad.yaml:" in text and "did you mean 'hate'" in text


def test_builtin_include_by_name(write_yaml: WriteYaml) -> None:
    if "helpfulness" not in constitution.builtin_names():
        pytest.skip("builtin constitutions not written yet")
    top = write_yaml("top.yaml", document("top", [principle("mine")], include=["helpfulness"]))
    c = constitution.load(top)
    assert c.principles[-1].id == "mine" and len(c.principles) > 1


def test_file_wide_examples_go_to_principles_without_their_own(write_yaml: WriteYaml) -> None:
    own = {**EXAMPLE, "critique": "Own example."}
    path = write_yaml("a.yaml", document("a", [principle("p1"), principle("p2", examples=[own])], examples=[EXAMPLE]))
    c = constitution.load(path)
    assert c.examples == []
    assert c.principle("p1").examples[0].critique == "Nothing to change."
    assert c.principle("p2").examples[0].critique == "Own example."
    assert not c.principle("p1").examples[0].needs_change


def test_templates_inherit_and_override(write_yaml: WriteYaml) -> None:
    write_yaml(
        "base.yaml",
        document("base", [principle("b1")], templates={"critique": "C {{ request }}", "revision": "R {{ critique }}"}),
    )
    top = write_yaml(
        "top.yaml", document("top", [], include=["base.yaml"], templates={"revision": "Mine {{ request }}"})
    )
    templates = constitution.load(top).templates
    assert templates is not None
    assert templates.critique == "C {{ request }}" and templates.revision == "Mine {{ request }}"


def test_dump_of_composed_constitution_loads_back_identical(tmp_path: Path, write_yaml: WriteYaml) -> None:
    write_yaml("base.yaml", document("base", [principle("b1", "hate")], examples=[EXAMPLE]))
    top = write_yaml("top.yaml", document("top", [principle("t1", weight=0.5)], include=["base.yaml"]))
    c = constitution.load(top)
    flat = tmp_path / "flat.yaml"
    flat.write_text(constitution.dump(c))
    again = constitution.load(flat)
    assert again.content_hash == c.content_hash
    assert "include" not in flat.read_text()


def test_unknown_builtin_name_suggests() -> None:
    if "default" not in constitution.builtin_names():
        pytest.skip("builtin constitutions not written yet")
    with pytest.raises(ConstitutionError, match="did you mean 'default'"):
        constitution.load("defualt")


def test_principle_lookup_suggests(write_yaml: WriteYaml) -> None:
    c = constitution.load(write_yaml("a.yaml", document("a", [principle("violent-crime")])))
    with pytest.raises(KeyError, match="did you mean 'violent-crime'"):
        c.principle("violent-crim")


# --- values that were once accepted without a word ------------------------------------------------


def problem_of(write_yaml: WriteYaml, doc: dict[str, object]) -> str:
    """The one problem loading this document reports, as FIELD: MESSAGE."""
    with pytest.raises(ConstitutionError) as err:
        constitution.load(write_yaml("c.yaml", doc))
    (problem,) = err.value.problems
    return f"{problem.field}: {problem.message}"


@pytest.mark.parametrize(
    ("weight", "words"),
    [
        (True, "expected a number such as 1.0, got the boolean true"),
        (False, "got the boolean false (YAML reads true, false, yes, no, on and off as booleans)"),
        ("1.5", "got the text '1.5'; remove the quotes"),
        ("heavy", "got the text 'heavy'"),
    ],
)
def test_weight_must_be_a_number_not_a_boolean_or_text(write_yaml: WriteYaml, weight: object, words: str) -> None:
    message = problem_of(write_yaml, document("c", [principle("p1", weight=weight)]))
    assert message.startswith("principles[0].weight: expected a number"), message
    assert words in message


def test_numbers_still_load_as_numbers(write_yaml: WriteYaml) -> None:
    c = constitution.load(write_yaml("c.yaml", document("c", [principle("p1", weight=2), principle("p2", weight=0.5)])))
    assert [p.weight for p in c.principles] == [2.0, 0.5]


@pytest.mark.parametrize(
    ("version", "words"),
    [
        (True, "must be the number 1, not the boolean true"),
        ("1", "must be the number 1, not the text '1'; remove the quotes"),
        ("one", "must be the number 1, not the text 'one'"),
    ],
)
def test_schema_version_must_be_the_number_one(write_yaml: WriteYaml, version: object, words: str) -> None:
    doc = document("c", [principle("p1")])
    doc["schema_version"] = version
    assert problem_of(write_yaml, doc) == f"schema_version: {words}"


@pytest.mark.parametrize(
    ("field", "char", "name"),
    [
        ("title", "\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("title", "\u200b", "U+200B ZERO WIDTH SPACE"),
        ("title", "\u2067", "U+2067 RIGHT-TO-LEFT ISOLATE"),
        ("title", "\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("title", "\n", "U+000A LINE FEED"),
        ("title", "\t", "U+0009 CHARACTER TABULATION"),
        ("title", "\x1b", "U+001B ESCAPE"),
        ("title", "\u2028", "U+2028 LINE SEPARATOR"),
        ("id", "\u200d", "U+200D ZERO WIDTH JOINER"),
        ("critique_request", "\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("critique_request", "\u2069", "U+2069 POP DIRECTIONAL ISOLATE"),
        ("critique_request", "\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("critique_request", "\x00", "U+0000 NULL"),
        ("critique_request", "\r", "U+000D CARRIAGE RETURN"),
        ("critique_request", "\x85", "U+0085 NEXT LINE"),
        ("comparison_question", "\x07", "U+0007 BELL"),
    ],
)
def test_hidden_characters_are_refused_by_name(write_yaml: WriteYaml, field: str, char: str, name: str) -> None:
    value = f"ab{char}cd" if field != "id" else f"ab{char}-cd"
    message = problem_of(write_yaml, document("c", [principle("p1", **{field: value})]))
    assert message.startswith(f"principles[0].{field}: contains {name} (character 3)"), message


@pytest.mark.parametrize(
    "text",
    [
        "Family: \U0001f468\u200d\U0001f469\u200d\U0001f467",  # zero-width joiners make one emoji
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian needs the zero-width non-joiner
        "hyphen\u00adation and a\u200bbreak hint",  # soft hyphen, zero-width space
        "columns\tand\nlines",
        "\u05e9\u05dc\u05d5\u05dd and English, no bidi controls",
    ],
)
def test_long_texts_keep_the_format_characters_scripts_need(write_yaml: WriteYaml, text: str) -> None:
    c = constitution.load(write_yaml("c.yaml", document("c", [principle("p1", critique_request=text)])))
    assert c.principles[0].critique_request == text


def test_a_builtin_like_include_of_a_local_file_names_the_file(write_yaml: WriteYaml) -> None:
    write_yaml("base.yaml", document("base", [principle("b1")]))
    assert problem_of(write_yaml, document("top", [principle("t1")], include=["base"])) == (
        "include[0]: no builtin constitution 'base'; base.yaml exists: write the name with its .yaml suffix"
    )


def test_same_ids_from_two_files_is_one_problem_naming_both(write_yaml: WriteYaml) -> None:
    write_yaml("a.yaml", document("a", [principle("x"), principle("y"), principle("z"), principle("w")]))
    write_yaml("b.yaml", document("b", [principle("x"), principle("y"), principle("z"), principle("w")]))
    message = problem_of(write_yaml, document("top", [], include=["a.yaml", "b.yaml"]))
    assert message.startswith("include[1]: 4 principle ids of ")
    assert "('x', 'y', 'z' and 1 more) already come from " in message
    assert "a.yaml through include[0]" in message


def test_including_the_same_file_with_disjoint_selections_is_fine(write_yaml: WriteYaml) -> None:
    write_yaml("base.yaml", document("base", [principle("b1", "hate"), principle("b2", "privacy")]))
    top = write_yaml(
        "top.yaml",
        document(
            "top",
            [],
            include=[
                {"path": "base.yaml", "select": {"tags": ["hate"]}},
                {"path": "base.yaml", "select": {"ids": ["b2"]}},
            ],
        ),
    )
    assert [p.id for p in constitution.load(top).principles] == ["b1", "b2"]
