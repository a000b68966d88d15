"""check_grad: it passes on the lecture's nets, and it fails when a gradient is wrong."""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
import graphnn.check
from graphnn import lecture


def _sine_feeds(n=16):
    x, y = lecture.noisy_sine(n)
    return {"x": x, "y": y}


def _blob_feeds(n=16):
    x, y = lecture.two_blobs(n)
    return {"x": x, "y": y}


def _softmax_feeds(n=16):
    x, labels = lecture.two_blobs(n)
    return {"x": x, "y": np.eye(2)[labels[:, 0].astype(int)]}


NETS = [(lecture.regression_net, _sine_feeds, 7),
        (lecture.classifier_net, _blob_feeds, 9),
        (lecture.softmax_classifier, _softmax_feeds, 6)]


@pytest.mark.parametrize("build,feeds,weights", NETS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_check_grad_passes_on_the_lecture_nets(build, feeds, weights):
    net = build()
    assert net.graph.num_parameters == weights
    report = gn.check_grad(net.loss, feeds())
    assert report.ok, str(report)
    assert len(report.rows) == 2 * len(net.graph.parameters)   # two directions per parameter
    assert report.max_error < 1e-7
    assert str(report).endswith("ok (tolerance 1e-06)")
    with_inputs = gn.check_grad(net.loss, feeds(), wrt=["x", *net.graph.parameters])
    assert with_inputs.ok and len(with_inputs.rows) == len(report.rows) + 2


def test_check_grad_fails_when_the_derived_gradient_is_for_another_loss(monkeypatch):
    net = lecture.regression_net()
    real_derive = graphnn.check.derive
    monkeypatch.setattr(graphnn.check, "derive", lambda loss: real_derive(gn.mul(loss, 1.5)))
    report = gn.check_grad(net.loss, _sine_feeds())
    assert not report.ok
    assert report.max_error > 0.1
    assert "<-- FAIL" in str(report) and str(report).splitlines()[-1].startswith("FAILED")


def test_check_grad_fails_when_an_op_derivative_is_wrong(monkeypatch):
    net = lecture.regression_net()
    x = gn.tanh.symbols[0]
    wrong = 1 - sp.tanh(x)  # should be 1 - tanh(x)**2
    monkeypatch.setattr(gn.tanh, "_derivative", lambda attr_items, position: wrong)
    report = gn.check_grad(net.loss, _sine_feeds())
    assert not report.ok
    failing = {row[0].split("[")[0] for row in report.rows if row[3] > report.tolerance}
    assert failing == {"hidden/W", "hidden/b"}   # only parameters below the tanh see it


def test_check_grad_with_given_parameter_values():
    net = lecture.softmax_classifier()
    params = {"linear/W": np.array([[0.3, -0.1], [0.2, 0.5]])}   # linear/b keeps its own value
    assert gn.check_grad(net.loss, _softmax_feeds(), params=params).ok
    assert gn.check_grad(net.loss, _softmax_feeds(), params=params, tolerance=0.0).ok is False
