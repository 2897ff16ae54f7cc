"""Label selectors as kubectl reads them: every operator on labels that have the key with a
matching value, with another value, and without the key; the parser's accepted and refused
syntax; and the selector written back (``str``) reading as the same selector."""

from __future__ import annotations

import pytest

from apis import BadRequest
from apis._selectors import Requirement, Selector, parse_selector, selector_from_labels

# selector, then whether it matches {tier: gpu}, {tier: cpu}, {} (no tier label)
TABLE = [
    ("tier=gpu", (True, False, False)),
    ("tier==gpu", (True, False, False)),
    ("tier!=gpu", (False, True, True)),
    ("tier in (gpu,big)", (True, False, False)),
    ("tier in ( big , gpu )", (True, False, False)),
    ("tier notin (gpu,big)", (False, True, True)),
    ("tier", (True, True, False)),
    ("!tier", (False, False, True)),
    ("! tier", (False, False, True)),
    ("tier=", (False, False, False)),  # an empty value: only a label whose value is ""
    ("tier,tier!=cpu", (True, False, False)),
    ("tier!=cpu,tier", (True, False, False)),
    ("  tier = gpu ,  !other ", (True, False, False)),
]


@pytest.mark.parametrize("text, expected", TABLE, ids=[t for t, _ in TABLE])
def test_each_operator_with_the_value_another_value_and_no_key(text: str, expected: tuple[bool, ...]) -> None:
    sel = parse_selector(text)
    got = tuple(sel.matches(labels) for labels in ({"tier": "gpu"}, {"tier": "cpu"}, {}))
    assert got == expected
    again = parse_selector(str(sel))
    assert again == sel
    assert tuple(again.matches(labels) for labels in ({"tier": "gpu"}, {"tier": "cpu"}, {})) == expected


def test_an_empty_value_matches_only_an_empty_label() -> None:
    assert parse_selector("tier=").matches({"tier": ""})
    assert not parse_selector("tier!=").matches({"tier": ""})
    assert parse_selector("tier!=").matches({"tier": "x"})


def test_requirements_are_anded_and_other_labels_do_not_matter() -> None:
    sel = parse_selector("a=1,b in (2,3),!c,d")
    assert sel.matches({"a": "1", "b": "3", "d": "", "e": "x"})
    for labels in ({"a": "1", "b": "4", "d": ""}, {"a": "2", "b": "3", "d": ""}, {"a": "1", "b": "3", "d": "", "c": "y"},
                   {"a": "1", "b": "3"}):
        assert not sel.matches(labels), labels


def test_the_parsed_requirements() -> None:
    assert parse_selector("a=1,b!=2,c in (x, y),d notin (z),e,!f").requirements == (
        Requirement("a", "=", ("1",)), Requirement("b", "!=", ("2",)), Requirement("c", "in", ("x", "y")),
        Requirement("d", "notin", ("z",)), Requirement("e", "exists"), Requirement("f", "!exists"),
    )
    assert parse_selector("a==1").requirements == (Requirement("a", "=", ("1",)),)
    assert parse_selector("x.io/app-name_1=v.2-b_c").requirements == (
        Requirement("x.io/app-name_1", "=", ("v.2-b_c",)),)


def test_written_back_in_kubectls_form() -> None:
    assert str(parse_selector("a==1, b != 2,c in ( x ,y ),d notin (z),e, ! f")) == \
        "a=1,b!=2,c in (x,y),d notin (z),e,!f"


@pytest.mark.parametrize("text", [None, "", "   "])
def test_no_selector_selects_everything(text: str | None) -> None:
    sel = parse_selector(text)
    assert sel == Selector() and not sel and sel.matches({}) and sel.matches({"a": "b"})
    assert str(sel) == ""


def test_a_selector_with_requirements_is_true() -> None:
    assert parse_selector("a")
    assert parse_selector("!a")


def test_equalities_are_the_equals_requirements_only() -> None:
    assert parse_selector("a=1,b!=2,c in (3),d,e==5").equalities() == {"a": "1", "e": "5"}
    assert parse_selector("!a").equalities() == {}


def test_selector_from_labels_matches_exactly_those_labels() -> None:
    sel = selector_from_labels({"a": "1", "b": "2"})
    assert sel.matches({"a": "1", "b": "2", "c": "3"})
    assert not sel.matches({"a": "1"}) and not sel.matches({"a": "1", "b": "3"})
    assert str(sel) == "a=1,b=2"
    assert selector_from_labels({}) == Selector()


BAD = [
    ("a in (b", "unable to parse requirement"),
    ("a notin b", "unable to parse requirement"),
    ("=x", "unable to parse requirement: '=x' in selector '=x'"),
    ("a,,b", "unable to parse requirement: ',b' in selector 'a,,b'"),
    ("a=b,", "trailing comma in selector 'a=b,'"),
    ("a,", "trailing comma"),
    ("a b", "unable to parse requirement"),
    ("a!=(", "unable to parse requirement"),
    ("a in ()", "invalid value list in 'a in ()'"),
    ("a in (,)", "invalid value list"),
    ("a in (b c)", "invalid value list"),
    ("a in (b$)", "invalid value list"),
    ("a=b c", "unable to parse requirement"),
    ("-a=b", "unable to parse requirement"),
    ("a=b=c", "unable to parse requirement"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[t for t, _ in BAD])
def test_bad_syntax_is_refused_naming_the_rest(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_selector(text)
    assert message in str(err.value)
    assert str(err.value).startswith("unable to parse requirement")


def test_selectors_are_values_hashable_and_immutable() -> None:
    a, b = parse_selector("a=1,!b"), parse_selector("a==1, !b")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.requirements = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.requirements[0].op = "!="  # type: ignore[misc]
    # one is made per query and per watch: slotted, no per-object dict
    assert not hasattr(a, "__dict__") and not hasattr(a.requirements[0], "__dict__")


def test_requirements_made_at_run_time_match_like_parsed_ones() -> None:
    # Ops read from a document (not this module's literals) are equal strings, not the same
    # objects: matching compares values.
    op_eq, op_exists, op_ne = "".join(["", "="]), "".join(["exi", "sts"]), "".join(["!", "="])
    sel = Selector((Requirement("a", op_eq, ("1",)), Requirement("b", op_exists)))  # type: ignore[arg-type]
    assert sel.matches({"a": "1", "b": ""}) and not sel.matches({"a": "2", "b": ""}) and not sel.matches({"a": "1"})
    assert sel.equalities() == {"a": "1"}
    assert str(sel) == "a=1,b"
    ne = Requirement("a", op_ne, ("1",))  # type: ignore[arg-type]
    assert ne.matches({"a": "2"}) and ne.matches({}) and not ne.matches({"a": "1"})


def test_a_long_selector_parses_to_its_end() -> None:
    text = ",".join(f"key{i}=value{i}" for i in range(40))
    assert len(text) > 500
    sel = parse_selector(text)
    assert len(sel.requirements) == 40 and sel.equalities()["key39"] == "value39"


def test_a_long_selector_with_a_trailing_comma_is_refused() -> None:
    text = ",".join(f"key{i}=value{i}" for i in range(40)) + ","
    with pytest.raises(BadRequest, match="trailing comma"):
        parse_selector(text)
