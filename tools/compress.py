"""Compress a trained Keras model to a latency target: `fdi-compress` run from a checkout.

    python tools/compress.py --model=in.keras --tree=profiles/this_cpu/timing_tree.json \
        --data=mnist.npz --target_latency_ms=0.05 --epochs=6 --out_dir=out

The code and the flags are in fdi_keras/cli/compress.py.
"""

from fdi_keras.cli.compress import entry, run  # noqa: F401  (tests call `run`)

if __name__ == "__main__":
    entry()
