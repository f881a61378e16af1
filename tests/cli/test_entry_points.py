"""The console scripts declared in setup.cfg exist and import, all in one process."""

import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def console_scripts():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_every_console_script_imports_without_defining_flags():
    import importlib

    from absl import flags

    scripts = console_scripts()
    names = ("fdi-profile", "fdi-fit-tree", "fdi-predict", "fdi-compress", "fdi-slim")
    assert set(scripts) == set(names)
    before = set(flags.FLAGS)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    assert set(flags.FLAGS) == before  # flags are defined by entry(), so tools share a process
