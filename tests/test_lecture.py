"""The lecture's networks and data."""
import numpy as np

from graphnn import lecture


def test_lecture_parameter_counts():
    assert lecture.regression_net().graph.num_parameters == 7
    assert lecture.classifier_net().graph.num_parameters == 9
    assert lecture.softmax_classifier().graph.num_parameters == 6


def test_lecture_counts_with_other_hidden_activations():
    for activation in ("relu", "sigmoid", "gelu"):
        assert lecture.regression_net(hidden_activation=activation).graph.num_parameters == 7
        assert lecture.classifier_net(hidden_activation=activation).graph.num_parameters == 9


# -- data ---------------------------------------------------------------------


def test_lecture_data_is_seeded():
    x, y = lecture.noisy_sine(10)
    assert x.shape == y.shape == (10, 1) and np.all(np.abs(x) <= 1)
    np.testing.assert_array_equal(x, lecture.noisy_sine(10)[0])
    x2, labels = lecture.two_blobs(20)
    assert x2.shape == (20, 2) and set(np.unique(labels)) <= {0.0, 1.0}
