"""digits.evaluation: the scores every model kind gets, on a case worked out by hand."""

import numpy as np
import pytest

from digits.evaluation import evaluate_probabilities


def test_scores_of_a_hand_worked_case():
    labels = np.array([0, 0, 1, 2])
    probabilities = np.full((4, 10), 0.02)
    # Rows predict 0, 1, 1, 2 with the top class at 0.82 (each row sums to 1).
    for row, predicted in enumerate([0, 1, 1, 2]):
        probabilities[row, predicted] = 0.82

    evaluation = evaluate_probabilities(labels, probabilities)

    assert evaluation.accuracy == 0.75
    # Log loss: mean of -log p(true class): three rows at 0.82, one at 0.02.
    assert evaluation.loss == pytest.approx(-(3 * np.log(0.82) + np.log(0.02)) / 4)
    assert evaluation.precision[:3] == [1.0, 0.5, 1.0]
    assert evaluation.recall[:3] == [0.5, 1.0, 1.0]
    assert evaluation.f1[:3] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert evaluation.f1[3:] == [0.0] * 7  # absent classes score 0, not an error
    assert evaluation.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 10)
    assert evaluation.support == [2, 1, 1] + [0] * 7
    matrix = np.array(evaluation.confusion_matrix)
    assert matrix.shape == (10, 10)
    assert matrix[0, 0] == 1 and matrix[0, 1] == 1 and matrix[1, 1] == 1 and matrix[2, 2] == 1
    assert matrix.sum() == 4
