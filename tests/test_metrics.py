"""Tests for cnn.metrics: accuracy, confusion_matrix, format_confusion_matrix."""

import numpy as np
import pytest

from cnn.metrics import accuracy, confusion_matrix, format_confusion_matrix

# A hand-worked example: 8 items, 3 classes.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 1, 0, 1, 1, 2, 0, 1])
# rows true, columns predicted, counted by hand:
#   true 0 -> predicted 0, 1, 0   : [2, 1, 0]
#   true 1 -> predicted 1, 1      : [0, 2, 0]
#   true 2 -> predicted 2, 0, 1   : [1, 1, 1]
CM_BY_HAND = np.array([[2, 1, 0],
                       [0, 2, 0],
                       [1, 1, 1]])
ACC_BY_HAND = 5 / 8


def one_hot(ids, c):
    out = np.zeros((len(ids), c), np.float32)
    out[np.arange(len(ids)), ids] = 1
    return out


def scores_for(ids, c, seed=0):
    """Random probability rows whose argmax is ids."""
    rng = np.random.default_rng(seed)
    p = rng.random((len(ids), c)) * 0.5
    p[np.arange(len(ids)), ids] = 0.9
    return p / p.sum(axis=1, keepdims=True)


def cm_by_bincount(t, p, c):
    return np.bincount(np.asarray(t) * c + np.asarray(p), minlength=c * c).reshape(c, c)


# --------------------------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------------------------

def test_accuracy_hand_example_all_input_forms():
    forms_true = [Y_TRUE, list(Y_TRUE), one_hot(Y_TRUE, 3)]
    forms_pred = [Y_PRED, Y_PRED.astype(np.int32), scores_for(Y_PRED, 3), one_hot(Y_PRED, 3)]
    for t in forms_true:
        for p in forms_pred:
            assert accuracy(t, p) == ACC_BY_HAND


def test_accuracy_extremes_and_type():
    assert accuracy([1, 2, 3], [1, 2, 3]) == 1.0
    assert accuracy([1, 2, 3], [0, 0, 0]) == 0.0
    assert isinstance(accuracy([1], [1]), float)


def test_accuracy_matches_mean_on_random_data():
    rng = np.random.default_rng(3)
    t = rng.integers(0, 10, 1000)
    p = rng.random((1000, 10))
    assert accuracy(t, p) == pytest.approx(np.mean(p.argmax(axis=1) == t))


def test_accuracy_nan_rows_never_correct():
    p = np.array([[np.nan, 0.2], [0.1, 0.9], [0.8, 0.2]])
    # row 0 would be "class 0" for np.argmax, and the label is 0: it must still count as wrong
    assert accuracy([0, 1, 0], p) == pytest.approx(2 / 3)


@pytest.mark.parametrize("t, p, exc, words", [
    ([0, 1, 2], [0, 1], ValueError, "3 items.*2"),
    ([], [], ValueError, "empty"),
    (np.zeros((2, 2, 2)), [0, 1], ValueError, "y_true.*shape"),
    ([0, 1], np.zeros((2, 0)), ValueError, "y_pred.*classes >= 1"),
    ([0, 1], np.zeros((2, 3, 1)), ValueError, "y_pred"),
    ([0.0, 1.0], [0, 1], TypeError, "y_true.*integer"),
    ([0, 1], ["a", "b"], TypeError, "y_pred"),
    ([-1, 1], [0, 1], ValueError, "y_true.*-1"),
    ([0, 5], np.ones((2, 3)), ValueError, "y_true holds class id 5"),
    (one_hot([0, 1], 3), one_hot([0, 1], 4), ValueError, "3 classes.*4"),
    (0, 0, ValueError, "shape"),
])
def test_accuracy_rejects_bad_input(t, p, exc, words):
    with pytest.raises(exc, match=words):
        accuracy(t, p)


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------

def test_confusion_matrix_hand_example():
    cm = confusion_matrix(Y_TRUE, Y_PRED)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    assert np.array_equal(cm, CM_BY_HAND)
    assert np.trace(cm) / cm.sum() == ACC_BY_HAND
    assert np.array_equal(confusion_matrix(one_hot(Y_TRUE, 3), scores_for(Y_PRED, 3)),
                          CM_BY_HAND)


def test_confusion_matrix_matches_bincount_formula():
    rng = np.random.default_rng(7)
    for n, c in [(1, 1), (50, 2), (1000, 10), (333, 47)]:
        t = rng.integers(0, c, n)
        p = rng.integers(0, c, n)
        cm = confusion_matrix(t, p, num_classes=c)
        assert np.array_equal(cm, cm_by_bincount(t, p, c))
        assert cm.sum() == n
        assert np.array_equal(cm.sum(axis=1), np.bincount(t, minlength=c))  # rows are true
        assert np.array_equal(cm.sum(axis=0), np.bincount(p, minlength=c))  # cols predicted


def test_confusion_matrix_num_classes():
    # default: largest id + 1
    assert confusion_matrix([0, 1], [1, 1]).shape == (2, 2)
    # a larger matrix pads with zero rows/cols
    cm = confusion_matrix([0, 1], [1, 1], num_classes=4)
    assert cm.shape == (4, 4) and cm[0, 1] == 1 and cm[1, 1] == 1 and cm.sum() == 2
    # a 2-D argument fixes the size even if the last classes never occur
    assert confusion_matrix([0, 0], np.eye(5)[[0, 1]]).shape == (5, 5)
    assert confusion_matrix([0, 1], [1, 1], num_classes=np.int64(2)).shape == (2, 2)


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"num_classes": 2}, ValueError, "class id 2"),
    ({"num_classes": 0}, ValueError, ">= 1"),
    ({"num_classes": 3.0}, TypeError, "num_classes"),
    ({"num_classes": True}, TypeError, "num_classes"),
])
def test_confusion_matrix_bad_num_classes(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        confusion_matrix([0, 1, 2], [0, 1, 1], **kwargs)


def test_confusion_matrix_num_classes_disagrees_with_columns():
    with pytest.raises(ValueError, match="columns"):
        confusion_matrix([0, 1], np.eye(3)[[0, 1]], num_classes=4)


def test_confusion_matrix_rejects_nan_and_bad_lengths():
    with pytest.raises(ValueError, match="NaN"):
        confusion_matrix([0, 1], np.array([[0.5, np.nan], [0.1, 0.9]]))
    with pytest.raises(ValueError, match="equal lengths"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        confusion_matrix(np.zeros(0, int), np.zeros(0, int))


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------

def test_format_confusion_matrix_exact_text():
    text = format_confusion_matrix(CM_BY_HAND)
    assert text == (
        "true\\pred  0  1  2 | total  recall\n"
        "        0  2  1  0 |     3   66.7%\n"
        "        1  0  2  0 |     2  100.0%\n"
        "        2  1  1  1 |     3   33.3%"
    )


def test_format_confusion_matrix_alignment_and_labels():
    cm = np.array([[1234, 5], [0, 0]])
    text = format_confusion_matrix(cm, labels=["cat", "dog"], recall=False)
    lines = text.splitlines()
    assert len(lines) == 3
    assert len({len(line) for line in lines}) == 1  # every line the same width
    assert lines[0].split() == ["true\\pred", "cat", "dog"]
    assert lines[1].split() == ["cat", "1234", "5"]
    # an empty row gets "-" for recall, not a division by zero
    assert format_confusion_matrix(cm).splitlines()[2].endswith("-")


def test_format_confusion_matrix_round_trips_numbers():
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 2000, (10, 10))
    rows = format_confusion_matrix(cm).splitlines()[1:]
    parsed = np.array([[int(v) for v in r.split("|")[0].split()[1:]] for r in rows])
    assert np.array_equal(parsed, cm)


@pytest.mark.parametrize("cm, kwargs, exc, words", [
    (np.zeros((2, 3), int), {}, ValueError, "square"),
    (np.zeros((0, 0), int), {}, ValueError, "square"),
    (np.zeros(3, int), {}, ValueError, "square"),
    (np.zeros((2, 2)), {}, TypeError, "integer"),
    (np.array([[1, -1], [0, 0]]), {}, ValueError, ">= 0"),
    (np.zeros((2, 2), int), {"labels": ["a"]}, ValueError, "labels has 1"),
])
def test_format_confusion_matrix_rejects_bad_input(cm, kwargs, exc, words):
    with pytest.raises(exc, match=words):
        format_confusion_matrix(cm, **kwargs)
