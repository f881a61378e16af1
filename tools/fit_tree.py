"""Refit a timing tree from profile stores: `fdi-fit-tree` run from a checkout.

    python tools/fit_tree.py --profiles=profiles/this_cpu/profile.jsonl \
        --out=profiles/this_cpu/timing_tree.json

The code and the flags are in fdi_keras/cli/fit_tree.py.
"""

from fdi_keras.cli.fit_tree import entry, run  # noqa: F401  (tests call `run`)

if __name__ == "__main__":
    entry()
