"""Two-digit classification from scikit-learn's 8x8 digits."""

import pytest
import torch

from mtrl.data import make_two_digits
from mtrl.data.digits import load_digit_images


@pytest.fixture(scope="module")
def data():
    return make_two_digits(n_train=200, n_test=50, seed=0)


def test_shapes_and_ranges(data):
    assert data["x_train"].shape == (200, 1, 8, 16) and data["x_train"].dtype == torch.float32
    assert data["y_train"].shape == (200, 2) and data["y_train"].dtype == torch.long
    assert data["x_test"].shape == (50, 1, 8, 16) and data["y_test"].shape == (50, 2)
    assert data["x_train"].min() >= 0 and data["x_train"].max() <= 1
    assert data["y_train"].min() >= 0 and data["y_train"].max() <= 9
    images, _ = load_digit_images()  # sklearn's 0..16 intensities scaled to exactly [0, 1]
    assert images.min() == 0.0 and images.max() == 1.0
    assert torch.equal(images * 16, (images * 16).round())


def test_halves_are_the_labelled_source_images(data):
    images, labels = load_digit_images()
    for split in ("train", "test"):
        src, x, y = data[f"src_{split}"], data[f"x_{split}"], data[f"y_{split}"]
        assert torch.equal(x[:, 0, :, :8], images[src[:, 0]])
        assert torch.equal(x[:, 0, :, 8:], images[src[:, 1]])
        assert torch.equal(y, labels[src])


def test_test_images_unseen(data):
    train_src = set(data["src_train"].flatten().tolist())
    test_src = set(data["src_test"].flatten().tolist())
    assert not train_src & test_src


def test_determinism_and_overlay():
    a, b = make_two_digits(20, 5, seed=4), make_two_digits(20, 5, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = make_two_digits(20, 5, seed=5)
    assert not torch.equal(a["src_train"], c["src_train"])
    o = make_two_digits(20, 5, seed=4, shift=4)
    assert o["x_train"].shape == (20, 1, 8, 12)
    images, _ = load_digit_images()
    left, right = images[o["src_train"][:, 0]], images[o["src_train"][:, 1]]
    torch.testing.assert_close(
        o["x_train"][:, 0, :, 4:8], torch.maximum(left[:, :, 4:], right[:, :, :4])
    )
    with pytest.raises(ValueError, match="shift=9"):
        make_two_digits(2, 2, shift=9)


def test_test_set_does_not_depend_on_the_training_budget():
    small = make_two_digits(n_train=100, n_test=60, seed=3)
    large = make_two_digits(n_train=500, n_test=60, seed=3)
    assert torch.equal(small["src_test"], large["src_test"])
    assert torch.equal(small["x_test"], large["x_test"])
    assert torch.equal(small["src_train"], large["src_train"][:100])


def test_shift_zero_is_refused():
    # exactly overlaid digits: compose(a, b, 0) == compose(b, a, 0), left/right unrecoverable
    with pytest.raises(ValueError, match="shift=0"):
        make_two_digits(n_train=10, n_test=10, shift=0)


def test_test_images_come_from_a_quarter_of_the_source_images():
    d = make_two_digits(n_train=3000, n_test=3000, seed=0)
    n_test_src = round(0.25 * 1797)  # 449 source images held out for testing
    assert d["src_test"].unique().numel() <= n_test_src
    assert d["src_train"].unique().numel() > n_test_src  # drawn from the other 1348
