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
    with pytest.raises(ConstitutionError, match="comes from both"):
        constitution.load(top)


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
