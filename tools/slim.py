"""Slim a trained Keras model with DeepRebirth: `fdi-slim` run from a checkout.

    python tools/slim.py --model=in.keras --data=cifar10.npz \
        --tree=profiles/this_cpu/timing_tree.json --out_dir=slimmed

The code and the flags (--dry_run, --plan, ...) are in fdi_keras/cli/slim.py.
"""

from fdi_keras.cli.slim import entry, run  # noqa: F401  (tests call `run`)

if __name__ == "__main__":
    entry()
