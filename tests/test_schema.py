"""The section validator (edge_mfr/schema.py): coercions, bounds, aliases, validators, collected errors, dump/copy.

The coercion table is what pydantic v2's lax mode did with the config before the switch (probed value by value),
except where a door lock needs stricter: a bool is never a number, inf and nan are never accepted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest

from edge_mfr.schema import MISSING, After, Plain, Section, ValidationError, field, field_validator, section_validator


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"{value} is odd")
    return value


def _under(value: Path, context: dict[str, Any]) -> Path:
    return Path(context.get("base", "/")) / value


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"a port is a whole number, not {type(value).__name__}")
    return value


class Leaf(Section):
    n: int = field(1, ge=0, le=10, description="a bounded int")
    x: float = field(0.5, gt=0, lt=1, description="a bounded float")
    name: str = field("a", min_length=1, max_length=3, description="a short text")
    flag: bool = field(False, description="a boolean")


class Slot(Section):
    start: str = field("00:00", alias="from", description="an aliased key")
    end: str = field("24:00", alias="to", description="another")


class Tree(Section):
    leaf: Leaf = field(default_factory=Leaf, description="a nested section")
    leaves: list[Leaf] = field(default_factory=list, max_length=3, description="a list of sections")
    slots: dict[str, list[Slot]] = field(default_factory=dict, description="a dict of lists of sections")
    zone: tuple[float, float] = field((0.0, 1.0), description="a pair")
    mode: Literal["on", "off"] = field("off", description="a literal")
    days: str | list[str] = field("daily", description="a union")
    even: Annotated[int, After(_even)] = field(2, description="an after marker")
    port: Annotated[int | str, Plain(_port)] = field(80, description="a plain marker")
    where: Annotated[Path, After(_under, context=True)] | None = field(None, description="a context marker")
    extra: Any = field(None, description="anything")


class Required(Section):
    must: int = field(description="no default")


class Checked(Section):
    low: int = field(0, description="lower end")
    high: int = field(10, description="upper end")
    protocol: Literal["3.1.1", "5"] = field("3.1.1", description="a before check turns 5 into '5'")
    log: list[str] = field(default_factory=list, description="what the checks saw")

    @field_validator("protocol", mode="before")
    @classmethod
    def _number_to_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("low", "high")
    @classmethod
    def _not_13(cls, value: int) -> int:
        if value == 13:
            raise ValueError("13 is not allowed")
        return value

    @section_validator
    def _ordered(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        self.log.append("ordered")


def errors(cls: type[Section], data: Any, context: dict[str, Any] | None = None) -> list[tuple[tuple, str, str]]:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data, context=context)
    return [(e["loc"], e["type"], e["msg"]) for e in info.value.errors()]


# ------------------------------------------------------------------------------------------------ coercions


@pytest.mark.parametrize(("key", "given", "expected"), [
    ("n", 5, 5), ("n", 5.0, 5), ("n", "5", 5), ("n", " 5 ", 5), ("n", "5.0", 5), ("n", "1_0", 10),
    ("x", 0.25, 0.25), ("x", "0.25", 0.25), ("x", " 0.5 ", 0.5),
    ("flag", True, True), ("flag", "true", True), ("flag", "TRUE", True), ("flag", "yes", True), ("flag", "on", True),
    ("flag", "1", True), ("flag", 1, True), ("flag", 1.0, True), ("flag", "off", False), ("flag", "no", False),
    ("flag", 0, False), ("flag", "f", False),
    ("name", 5, "5"), ("name", 1.5, "1.5"),  # a number where text is expected becomes text (`id = 123`)
])
def test_lax_coercions_kept_from_pydantic(key, given, expected):
    value = getattr(Leaf.model_validate({key: given}), key)
    assert value == expected and type(value) is type(expected)


def test_a_float_field_accepts_an_int_as_a_float():
    tree = Tree.model_validate({"zone": [0, 1]})
    assert tree.zone == (0.0, 1.0) and all(type(v) is float for v in tree.zone)


@pytest.mark.parametrize(("key", "given", "kind", "msg"), [
    ("n", 5.5, "int_from_float", "Input should be a valid integer, got a number with a fractional part"),
    ("n", "abc", "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
    ("n", "1__0", "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
    ("n", None, "int_type", "Input should be a valid integer"),
    ("n", [5], "int_type", "Input should be a valid integer"),
    ("x", "abc", "float_parsing", "Input should be a valid number, unable to parse string as a number"),
    ("x", None, "float_type", "Input should be a valid number"),
    ("flag", 2, "bool_type", "Input should be a valid boolean"),
    ("flag", "maybe", "bool_type", "Input should be a valid boolean"),
    ("flag", " true", "bool_type", "Input should be a valid boolean"),
    ("flag", None, "bool_type", "Input should be a valid boolean"),
    ("name", True, "string_type", "Input should be a valid string"),
    ("name", None, "string_type", "Input should be a valid string"),
    ("name", ["a"], "string_type", "Input should be a valid string"),
])
def test_wrong_types_are_named(key, given, kind, msg):
    assert errors(Leaf, {key: given}) == [((key,), kind, msg)]


@pytest.mark.parametrize("given", [True, False])
@pytest.mark.parametrize("key", ["n", "x"])
def test_a_bool_is_never_a_number(key, given):
    """pydantic's lax mode took `unlock_seconds = true` as 1 s; a door lock refuses it."""
    ((loc, kind, _),) = errors(Leaf, {key: given})
    assert loc == (key,) and kind in ("int_type", "float_type")


@pytest.mark.parametrize("given", [math.inf, -math.inf, math.nan, "inf", "-inf", "nan", "NaN", 10 ** 400])
@pytest.mark.parametrize("key", ["n", "x"])
def test_inf_and_nan_are_never_accepted(key, given):
    if key == "n" and isinstance(given, str):
        expected = "int_parsing"  # not a whole number in text either
    elif key == "n" and isinstance(given, int):
        expected = "less_than_equal"  # a huge int is an int, out of bounds
    else:
        expected = "finite_number"
    ((loc, kind, _),) = errors(Leaf, {key: given})
    assert (loc, kind) == ((key,), expected)


def test_inf_is_refused_even_without_bounds():
    class Free(Section):
        v: float = field(0.0, description="no bounds")

    assert errors(Free, {"v": "inf"}) == [(("v",), "finite_number", "Input should be a finite number")]
    assert Free.model_validate({"v": 1e308}).v == 1e308


def test_literals_paths_tuples_lists_and_dicts():
    assert errors(Tree, {"mode": "maybe"}) == [(("mode",), "literal_error", "Input should be 'on' or 'off'")]
    assert errors(Tree, {"mode": True}) == [(("mode",), "literal_error", "Input should be 'on' or 'off'")]

    class Level(Section):
        level: Literal[1, 2] = 1

    assert Level.model_validate({"level": 2}).level == 2
    assert errors(Level, {"level": True}) == [(("level",), "literal_error", "Input should be 1 or 2")]
    assert errors(Level, {"level": "2"}) == [(("level",), "literal_error", "Input should be 1 or 2")]
    assert errors(Tree, {"where": 5}) == [(("where",), "path_type", "Input is not a valid path")]
    assert errors(Tree, {"zone": [0.5]}) == [(("zone",), "too_short", "Tuple should have 2 items, not 1")]
    assert errors(Tree, {"zone": [0, 0.5, 1]}) == [(("zone",), "too_long", "Tuple should have 2 items, not 3")]
    assert errors(Tree, {"zone": "0,1"}) == [(("zone",), "tuple_type", "Input should be a valid tuple")]
    assert errors(Tree, {"leaves": {"n": 1}}) == [(("leaves",), "list_type", "Input should be a valid list")]
    assert errors(Tree, {"slots": []}) == [(("slots",), "dict_type", "Input should be a valid dictionary")]
    assert errors(Tree, {"slots": {"a": "x"}}) == [(("slots", "a"), "list_type", "Input should be a valid list")]
    assert errors(Tree, {"leaf": 5}) == [(("leaf",), "model_type",
                                          "Input should be a valid dictionary or instance of Leaf")]
    tree = Tree.model_validate({"leaves": ({"n": 2},), "slots": {"a": [{"from": "08:00"}]}, "extra": {1: 2}})
    assert tree.leaves == [Leaf(n=2)] and type(tree.leaves) is list and tree.extra == {1: 2}
    assert tree.slots["a"][0].start == "08:00"


def test_unions_try_each_member_and_report_the_one_that_fits_the_shape():
    assert Tree.model_validate({"days": "mon"}).days == "mon"
    assert Tree.model_validate({"days": ["sat", "sun"]}).days == ["sat", "sun"]
    assert Tree.model_validate({"days": 5}).days == "5"  # the first member, like pydantic
    assert errors(Tree, {"days": {}}) == [(("days",), "union_type", "Input should be a valid string or a valid list")]
    assert errors(Tree, {"days": ["sat", None]}) == [(("days", 1), "string_type", "Input should be a valid string")]
    assert Tree.model_validate({"where": None}).where is None


# ------------------------------------------------------------------------------------------ bounds, markers


@pytest.mark.parametrize(("data", "error"), [
    ({"n": -1}, (("n",), "greater_than_equal", "Input should be greater than or equal to 0")),
    ({"n": 11}, (("n",), "less_than_equal", "Input should be less than or equal to 10")),
    ({"x": 0}, (("x",), "greater_than", "Input should be greater than 0")),
    ({"x": 1.0}, (("x",), "less_than", "Input should be less than 1")),
    ({"name": ""}, (("name",), "string_too_short", "String should have at least 1 character")),
    ({"name": "abcd"}, (("name",), "string_too_long", "String should have at most 3 characters")),
])
def test_bounds(data, error):
    assert errors(Leaf, data) == [error]


def test_bounds_at_the_edges_pass_and_errors_quote_the_input_as_given():
    assert Leaf.model_validate({"n": 0, "x": 0.999, "name": "abc"}).n == 0
    with pytest.raises(ValidationError) as info:
        Leaf.model_validate({"x": 0})
    assert info.value.errors()[0]["input"] == 0 and type(info.value.errors()[0]["input"]) is int


def test_list_length_bounds():
    assert errors(Tree, {"leaves": [{}] * 4}) == [(("leaves",), "too_long", "List should have at most 3 items, not 4")]


def test_after_plain_and_context_markers():
    assert errors(Tree, {"even": 3}) == [(("even",), "value_error", "3 is odd")]
    assert errors(Tree, {"port": 8.0}) == [(("port",), "value_error", "a port is a whole number, not float")]
    assert errors(Tree, {"port": "8080"}) == [(("port",), "value_error", "a port is a whole number, not str")]
    assert Tree.model_validate({"port": 8080}).port == 8080  # Plain saw the raw input: no int | str coercion
    assert Tree.model_validate({"where": "x"}, context={"base": "/etc"}).where == Path("/etc/x")
    assert Tree.model_validate({"where": "x"}).where == Path("/x")


# ----------------------------------------------------------------------------------------- keys and aliases


def test_unknown_keys_are_refused_and_named():
    assert errors(Leaf, {"m": 1}) == [(("m",), "extra_forbidden", "Extra inputs are not permitted")]


def test_missing_required_field_is_named():
    assert errors(Required, {}) == [(("must",), "missing", "Field required")]
    assert Required(must=3).must == 3


def test_aliases_are_read_by_alias_or_name_and_dumped_by_choice():
    assert Slot.model_validate({"from": "08:00"}).start == "08:00"
    assert Slot.model_validate({"start": "09:00"}).start == "09:00"
    assert Slot(start="07:00").start == "07:00"
    assert errors(Slot, {"from": "08:00", "start": "09:00"}) == [
        (("start",), "extra_forbidden", "Extra inputs are not permitted")]
    assert Slot().model_dump() == {"start": "00:00", "end": "24:00"}
    assert Slot().model_dump(by_alias=True) == {"from": "00:00", "to": "24:00"}
    assert errors(Slot, {"from": 1.5j}) == [(("from",), "string_type", "Input should be a valid string")]


def test_model_fields_describe_each_field():
    info = Slot.model_fields["start"]
    assert (info.alias, info.description, info.annotation, info.default) == ("from", "an aliased key", str, "00:00")
    assert Tree.model_fields["leaves"].default is MISSING and Tree.model_fields["leaves"].default_factory is list
    assert Required.model_fields["must"].required and not Leaf.model_fields["n"].required
    assert list(Leaf.model_fields) == ["n", "x", "name", "flag"]
    assert "n" not in vars(Leaf)  # the value lives on the instance, the declaration in model_fields


def test_a_section_declared_in_a_function_resolves_its_local_names():
    class Inner(Section):
        v: int = 1

    class Outer(Section):
        items: dict[str, list[Inner]] = field(default_factory=dict)

    assert Outer.model_validate({"items": {"a": [{"v": 2}]}}).items["a"][0].v == 2


def test_a_validator_of_an_unknown_field_fails_at_class_creation():
    with pytest.raises(TypeError, match="unknown fields"):
        class Typo(Section):
            a: int = 0

            @field_validator("b")
            @classmethod
            def _b(cls, value: int) -> int:
                return value


def test_an_unsupported_annotation_is_an_error_not_a_pass():
    class Odd(Section):
        c: complex = 0j

    with pytest.raises(TypeError, match="no check"):
        Odd.model_validate({"c": 1j})


# ------------------------------------------------------------------------------------------------ validators


def test_before_and_after_field_validators():
    assert Checked.model_validate({"protocol": 5}).protocol == "5"
    assert errors(Checked, {"protocol": 4}) == [(("protocol",), "literal_error", "Input should be '3.1.1' or '5'")]
    assert errors(Checked, {"low": 13, "high": 13}) == [(("low",), "value_error", "13 is not allowed"),
                                                        (("high",), "value_error", "13 is not allowed")]


def test_section_validator_runs_once_the_fields_are_valid_and_names_the_section():
    assert Checked().log == ["ordered"]  # on defaults too
    assert errors(Checked, {"low": 5, "high": 4}) == [((), "value_error", "low (5) must not exceed high (4)")]
    assert errors(Checked, {"low": 5, "high": "x"}) == [  # the field error alone: the rule needs both values
        (("high",), "int_parsing", "Input should be a valid integer, unable to parse string as an integer")]

    class Holder(Section):
        c: list[Checked] = field(default_factory=list)

    assert errors(Holder, {"c": [{}, {"low": 9, "high": 1}]}) == [
        (("c", 1), "value_error", "low (9) must not exceed high (1)")]


def test_every_problem_is_collected_with_its_location_in_order():
    data = {"leaf": {"n": "x", "zz": 1, "x": 2}, "leaves": [{}, {"flag": "maybe"}], "mode": "dim",
            "slots": {"a": [{"fromm": "08:00"}, 5]}, "unknown": True}
    assert [(loc, kind) for loc, kind, _ in errors(Tree, data)] == [
        (("leaf", "n"), "int_parsing"), (("leaf", "x"), "less_than"), (("leaf", "zz"), "extra_forbidden"),
        (("leaves", 1, "flag"), "bool_type"), (("slots", "a", 0, "fromm"), "extra_forbidden"),
        (("slots", "a", 1), "model_type"), (("mode",), "literal_error"), (("unknown",), "extra_forbidden")]


def test_the_error_is_a_value_error_that_reads_well():
    with pytest.raises(ValueError) as info:
        Leaf(n=-1, zz=2)
    text = str(info.value)
    assert text.splitlines() == ["2 validation errors for Leaf",
                                 "n: Input should be greater than or equal to 0 [type=greater_than_equal]",
                                 "zz: Extra inputs are not permitted [type=extra_forbidden]"]
    assert errors(Leaf, "text") == [((), "model_type", "Input should be a valid dictionary or instance of Leaf")]


# ------------------------------------------------------------------------------- construction, dump, copy


def test_keyword_construction_validates_and_coerces():
    assert Leaf(n="3").n == 3
    with pytest.raises(ValidationError):
        Leaf(n=11)


def test_defaults_are_fresh_per_instance():
    a, b = Tree(), Tree()
    a.leaves.append(Leaf())
    assert b.leaves == [] and a.leaf is not b.leaf

    class Tags(Section):
        tags: list[str] = field(["a"], description="a mutable plain default")

    c, d = Tags(), Tags()
    c.tags.append("b")
    assert d.tags == ["a"] and Tags.model_fields["tags"].default == ["a"]


def test_model_validate_returns_an_instance_as_is():
    leaf = Leaf(n=4)
    assert Leaf.model_validate(leaf) is leaf
    assert Tree.model_validate({"leaf": leaf}).leaf is leaf


def test_dump_and_validate_round_trip():
    tree = Tree.model_validate({"leaf": {"n": 3}, "leaves": [{"name": "b"}], "slots": {"a": [{"from": "08:00"}]},
                                "zone": [0.25, 0.75], "days": ["sat"], "where": "w"}, context={"base": "/b"})
    dumped = tree.model_dump(by_alias=True)
    assert dumped["slots"] == {"a": [{"from": "08:00", "to": "24:00"}]} and dumped["zone"] == (0.25, 0.75)
    assert dumped["leaves"] == [{"n": 1, "x": 0.5, "name": "b", "flag": False}]
    assert Tree.model_validate(dumped) == tree
    assert "leaf" not in tree.model_dump(exclude={"leaf"}) and "zone" in tree.model_dump(exclude={"leaf"})


def test_copy_shallow_deep_and_with_an_unvalidated_update():
    tree = Tree.model_validate({"leaves": [{}]})
    shallow, deep = tree.model_copy(), tree.model_copy(deep=True)
    assert shallow == tree == deep and shallow is not tree
    assert shallow.leaves is tree.leaves and deep.leaves is not tree.leaves and deep.leaves[0] is not tree.leaves[0]
    changed = tree.model_copy(update={"mode": "on", "even": 3})  # as pydantic: an update is not validated
    assert (changed.mode, changed.even, tree.mode) == ("on", 3, "off")


def test_equality_and_repr():
    assert Leaf(n=2) == Leaf(n=2) and Leaf(n=2) != Leaf(n=3)
    assert Leaf() != {"n": 1, "x": 0.5, "name": "a", "flag": False}

    class Twin(Section):
        n: int = 1
        x: float = 0.5
        name: str = "a"
        flag: bool = False

    assert Twin() != Leaf()
    assert repr(Slot()) == "Slot(start='00:00', end='24:00')"
    with pytest.raises(TypeError):
        hash(Leaf())
