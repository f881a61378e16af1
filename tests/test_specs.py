import pytest

from fdi_keras.specs import LayerSpec, conv_output_size

CONV = dict(h=28, w=28, cin=32, cout=64, kh=3, kw=3, sh=1, sw=1)


def test_key_is_canonical_and_round_trips():
    a = LayerSpec("conv2d", CONV, {"padding": "same"})
    b = LayerSpec("conv2d", dict(reversed(list(CONV.items()))))
    assert a.key() == b.key() and hash(a) == hash(b)
    assert LayerSpec.from_dict(a.to_dict()) == a


def test_replace_changes_one_dim():
    assert LayerSpec("conv2d", CONV).replace(cout=65).dims["cout"] == 65


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="conv3d", dims=CONV), "Unknown kernel kind"),
        (dict(kind="conv2d", dims={**CONV, "extra": 1}), "needs exactly the dims"),
        (dict(kind="conv2d", dims={**CONV, "cout": -1}), "non-negative integers"),
        (dict(kind="conv2d", dims=CONV, attrs={"padding": "causal"}), "padding"),
        (dict(kind="conv2d", dims=CONV, dtype="bfloat16"), "dtype must be one of"),
    ],
)
def test_bad_specs_explain_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerSpec(**kwargs)


@pytest.mark.parametrize(
    "size, k, s, padding, out",
    [
        (28, 3, 1, "same", 28),
        (28, 3, 2, "same", 14),
        (29, 3, 2, "same", 15),
        (28, 3, 1, "valid", 26),
        (29, 3, 2, "valid", 14),
        (2, 3, 1, "valid", 0),
    ],
)
def test_conv_output_size(size, k, s, padding, out):
    assert conv_output_size(size, k, s, padding) == out
