import argparse
from dataclasses import dataclass, field

import pytest

from longvid.config import ConfigError, add_dataclass_arguments, build_config, from_dict


@dataclass
class Inner:
    size: int = 3  # how big
    ratio: float = 0.5  # how much


@dataclass
class Outer:
    name: str = "x"  # what it is called
    enabled: bool = True  # on or off
    tags: list[str] = field(default_factory=list)  # labels
    inner: Inner = field(default_factory=Inner)


def parse(argv):
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, Outer)
    return p, p.parse_args(argv)


def test_yaml_then_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: from-yaml\ninner:\n  size: 7\n  ratio: 0.25\n")
    _, args = parse(["--inner.size", "9", "--enabled", "false"])
    out = build_config(Outer, args, str(cfg))
    assert out == Outer(name="from-yaml", enabled=False, inner=Inner(size=9, ratio=0.25))


def test_help_lists_every_field_with_its_comment():
    p, _ = parse([])
    text = p.format_help()
    for flag, words in [("--inner.size", "how big"), ("--inner.ratio", "how much"), ("--enabled", "on or off"), ("--tags", "labels")]:
        assert flag in text and words in text


def test_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown setting"):
        from_dict(Outer, {"nmae": "typo"})
    with pytest.raises(ConfigError, match="cannot read 'abc' as int"):
        from_dict(Outer, {"inner": {"size": "abc"}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Outer, {"inner": 3})


def test_yaml_is_loaded_safely(tmp_path):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    _, args = parse([])
    with pytest.raises(ConfigError, match="never loaded"):  # was yaml.YAMLError: now one line for the CLI
        build_config(Outer, args, str(cfg))
