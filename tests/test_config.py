"""Configuration overrides given as text (ddm.config): ``--set section.field=value`` is parsed and
checked against the field's type here, for the command line, the benchmarks and anyone else."""

from __future__ import annotations

import pytest

from ddm.config import (ExperimentConfig, apply_overrides, apply_text_overrides, check_override, coerce_value,
                        field_type, get_profile, parse_assignments, parse_override, parse_value)


def test_parse_value_json_then_python_literal_then_text() -> None:
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("null") is None and parse_value("[1, 2]") == [1, 2]
    assert parse_value("None") is None and parse_value("(1, 2)") == (1, 2) and parse_value("False") is False
    assert parse_value("mnist") == "mnist" and parse_value("folder:/x") == "folder:/x"


def test_field_type_reads_the_annotation() -> None:
    assert field_type("train.epochs") == "int"
    assert field_type("train.lr") == "float"
    assert field_type("data.train_per_class") == "int | None"
    assert field_type("eval.noise_seeds") == "tuple[int, ...]"
    assert field_type("online.vectorised") == "bool | None"
    assert field_type("threads") == "int" and field_type("device") == "str"


@pytest.mark.parametrize(("key", "text", "expected"), [
    ("train.epochs", "3", 3),
    ("train.lr", "1", 1.0),                       # an integer where a float is asked: converted
    ("train.lr", "0.05", 0.05),
    ("data.name", "cifar10-jpeg", "cifar10-jpeg"),
    ("data.name", "7", "7"),                      # a string field keeps the text as written
    ("data.train_per_class", "null", None),
    ("data.train_per_class", "40", 40),
    ("eval.noise_seeds", "[1,2]", (1, 2)),        # a list for a tuple: converted
    ("eval.noise_seeds", "3", (3,)),
    ("distill.soft_labels", "true", True),
    ("online.vectorised", "None", None),
    ("threads", "0", 0),
    ("device", "cpu", "cpu"),
])
def test_parse_override_good_values(key: str, text: str, expected) -> None:
    value = parse_override(key, text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("key", "text", "message"), [
    ("train.epochs", "abc", "train.epochs expects an integer, got 'abc'"),
    ("train.epochs", "2.5", "train.epochs expects an integer"),
    ("train.epochs", "true", "train.epochs expects an integer"),      # a bool is not an int here
    ("train.lr", "fast", "train.lr expects a number"),
    ("distill.soft_labels", "1", "distill.soft_labels expects true or false"),
    ("eval.noise_seeds", "[1, 'a']", "eval.noise_seeds expects integers, e.g. eval.noise_seeds=[1,2]"),
    ("train.epochs", "null", "train.epochs cannot be None"),
    ("threads", "-1", "threads must be an integer >= 0"),
])
def test_parse_override_wrong_type_names_the_field_and_what_it_expects(key: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_override(key, text)


@pytest.mark.parametrize(("key", "message", "fix"), [
    ("train.epoch", "unknown field 'epoch' in section 'train'", "did you mean 'epochs'?"),
    ("trian.epochs", "unknown configuration section 'trian'", "did you mean 'train'?"),
    ("thread", "unknown top-level override 'thread'", "did you mean 'threads'?"),
    ("train.nope", "unknown field 'nope' in section 'train'", "fields are ['epochs', 'lr', 'momentum'"),
])
def test_unknown_field_is_refused_with_the_fix(key: str, message: str, fix: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_override(key, "3")
    assert message in str(info.value) and fix in str(info.value)
    with pytest.raises(ValueError) as info:        # the same check for values given in Python
        apply_overrides(get_profile("quick"), {key: 3})
    assert message in str(info.value)


def test_apply_text_overrides_builds_the_typed_configuration() -> None:
    base = get_profile("quick")
    config = apply_text_overrides(base, ["train.epochs=3", "train.lr=1", "eval.noise_seeds=[1,2]",
                                         "data.train_per_class=null", "threads=2", "train.epochs=4"])
    assert config.train.epochs == 4                      # the later item wins
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.eval.noise_seeds == (1, 2) and config.data.train_per_class is None and config.threads == 2
    # everything not named is the profile's
    assert config.model == base.model and config.distill == base.distill
    assert apply_text_overrides(base, []) == base


@pytest.mark.parametrize("item", ["train.epochs", "=3", ""])
def test_an_assignment_without_a_key_or_value_is_refused(item: str) -> None:
    with pytest.raises(ValueError, match=r"section.field=value \(e.g. --set train.epochs=3\)"):
        parse_assignments([item])


def test_check_override_and_coerce_value_for_python_values() -> None:
    assert check_override("threads", 2) == 2
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        check_override("threads", -3)
    assert coerce_value("eval.noise_seeds", [1, 2], "[1,2]", "tuple[int, ...]") == (1, 2)
    assert coerce_value("data.train_per_class", None, "null", "int | None") is None


def test_threads_is_validated_wherever_it_is_set() -> None:
    assert get_profile("quick", threads=3).threads == 3
    assert get_profile("paper").threads == 0          # 0: torch's own choice
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be an integer >= 0"):
            get_profile("quick", threads=bad)
    assert ExperimentConfig().threads == 1
