"""Each default is stated once, in fruits/settings.py: the commands' --help reads it from there."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from cli.main import build_parser, main
from fruits.settings import Settings


def command_parser(name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in build_parser([name])._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]


@pytest.mark.parametrize("name", ["fit", "refit", "stream", "lake", "report", "setup"])
def test_every_flag_of_a_setting_with_a_default_states_that_default(name: str) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(Settings) if f.default not in (None, dataclasses.MISSING)}
    flags = [a for a in command_parser(name)._actions if a.dest in defaults]
    assert flags, f"`fruits {name}` has no flag of a setting with a default"
    for flag in flags:
        assert f"default {defaults[flag.dest]}" in flag.help, (flag.option_strings, flag.help)


def test_the_stream_help_shows_the_settings_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for stated in (
        "(default .fruits/landing)",
        "(default .fruits/lake/results)",
        "(default .fruits/checkpoints/stream)",
        "(default models:/fruits-pca@champion)",
        "(default 2s)",
        "(default 1000)",
        "(default 64)",
        "(default 1h)",
        "(default 10s)",
        "(default 7d;",
        "(default onnx;",
        "(default imagenet)",
        "(default .fruits, env FRUITS_STATE_DIR)",
    ):
        assert stated in text, stated
