"""In-place updates and cached feed checks: cases where a plausible schedule gives wrong numbers.

Each graph is compiled for the CPU and compared with the reference executor over several
training steps (float64).
"""
import numpy as np
import pytest

import graphnn as gn


def _steps(build, feeds, optimizer, steps=3):
    out = {}
    for target in ("reference", "cpu"):
        graph, loss = build()
        model = gn.compile(graph, loss, target=target, dtype="float64", optimizer=optimizer())
        losses = [model.step(feeds) for _ in range(steps)]
        out[target] = (losses, model.get_params(), {k: np.array(v) for k, v in model.state.items()})
    return out


def _assert_same(out):
    (l_ref, p_ref, s_ref), (l_cpu, p_cpu, s_cpu) = out["reference"], out["cpu"]
    np.testing.assert_allclose(l_cpu, l_ref, rtol=1e-12, atol=1e-12)
    for k in p_ref:
        np.testing.assert_allclose(p_cpu[k], p_ref[k], rtol=1e-12, atol=1e-12, err_msg=k)


def _matvec_net():
    @gn.index_op
    def matvec(q, p):
        i, j = gn.indices("i j")
        return (i,), gn.IndexSum(q[i, j] * p[j], j)
    g = gn.Graph("matvec_hazard")
    x = g.input("x", (3,))
    p = g.parameter("p", (3,), value=np.array([0.1, -0.2, 0.3]))
    q = g.parameter("q", (3, 3), value=np.arange(9.0).reshape(3, 3) / 10)
    return g, gn.sum(p * x) + gn.sum(gn.tanh(matvec(q, p)))


@pytest.mark.parametrize("optimizer", [lambda: gn.Adam(lr=0.1), lambda: gn.Momentum(lr=0.1, nesterov=True),
                                       lambda: gn.Adam(lr=0.1, weight_decay=0.01)],
                         ids=["adam", "nesterov", "adam-weight-decay"])
def test_slot_updates_do_not_run_before_the_parameter_reads_them(optimizer):
    """The parameter's update is held back by a later reader of the parameter; its slots'
    updates must wait with it, or the parameter rule sees already-updated moments."""
    _assert_same(_steps(_matvec_net, {"x": np.array([0.5, -1.0, 2.0])}, optimizer))


def test_an_update_does_not_share_a_loop_with_a_transposed_read_of_its_parameter():
    def build():
        @gn.index_op
        def tmul(q, p):
            i, j = gn.indices("i j")
            return (i, j), q[j, i] * p[i, j]
        g = gn.Graph("transpose_hazard")
        x = g.input("x", (3, 3))
        p = g.parameter("p", (3, 3), value=np.arange(9.0).reshape(3, 3) / 7)
        q = g.parameter("q", (3, 3), value=np.arange(9.0).reshape(3, 3)[::-1] / 5)
        return g, gn.sum(tmul(q, p) * x) + gn.sum(q * q)
    _assert_same(_steps(build, {"x": np.linspace(-1, 1, 9).reshape(3, 3)}, lambda: gn.SGD(lr=0.1)))


@pytest.mark.parametrize("optimizer", [lambda: gn.Adam(lr=0.1), lambda: gn.Momentum(lr=0.1)], ids=["adam", "momentum"])
def test_scalar_parameter_with_optimizer_slots(optimizer):
    def build():
        g = gn.Graph("scalar_param")
        x = g.input("x", (None, 3))
        s = g.parameter("s", (), value=np.array(0.5))
        return g, s * s + gn.mean(x) * s
    _assert_same(_steps(build, {"x": np.ones((2, 3))}, optimizer))


def test_list_feeds_are_checked_every_call():
    g = gn.Graph("list_feeds")
    x = g.input("x", (None, 2))
    g.output("o", gn.tanh(x) * 2.0)
    model = gn.compile(g, target="cpu", dtype="float64")
    rows = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]
    assert model.forward({"x": rows})["o"].shape == (4, 2)
    one = model.forward({"x": rows[:1]})["o"]
    np.testing.assert_allclose(one, 2 * np.tanh(np.array(rows[:1])))
    with pytest.raises(gn.FeedError, match="expects"):
        model.forward({"x": [[0.1, 0.2, 0.3]]})


def test_reference_outputs_are_copies_not_live_parameters():
    g = gn.Graph("alias")
    x = g.input("x", (None, 3))
    w = g.parameter("w", (3,), value=np.array([1.0, 2.0, 3.0]))
    g.output("w", w)
    for target in ("reference", "cpu"):
        model = gn.compile(g, gn.sum(x * w), target=target, dtype="float64", optimizer=gn.SGD(lr=0.1))
        feeds = {"x": np.ones((2, 3))}
        before = model.forward(feeds)["w"]
        model.step(feeds)
        np.testing.assert_array_equal(before, [1.0, 2.0, 3.0])
