"""Profile a device's kernels and fit its timing tree: `fdi-profile` run from a checkout.

    python tools/profile_device.py --backend=local --kinds=conv2d,dense,depthwise_conv2d \
        --num_configs=300 --threads=1 --out_dir=profiles/this_cpu

The code and the flags (--backend=adb|ssh, --retries, ...) are in
fdi_keras/cli/profile_device.py.
"""

from fdi_keras.cli.profile_device import entry, run  # noqa: F401  (tests call `run`)

if __name__ == "__main__":
    entry()
