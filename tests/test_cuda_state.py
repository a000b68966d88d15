"""One source of truth on CUDA: after device steps, every way of reading the model sees the
trained values, copied back from the device lazily -- only when read, and only after a step."""
import numpy as np
import pytest

import graphnn as gn

pytestmark = pytest.mark.cuda


def _pair(optimizer=lambda: gn.Adam(lr=0.05)):
    net = gn.lecture.regression_net()
    x, y = gn.lecture.noisy_sine(n=8)
    feeds = {"x": x, "y": y}
    models = {t: gn.compile(net.graph, net.loss, optimizer=optimizer(), target=t, dtype="float64",
                            wait=True) for t in ("cpu", "cuda")}
    return models, feeds


def _close(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-10, atol=1e-13, err_msg=k)


def test_params_and_state_read_the_trained_values_after_device_steps():
    models, feeds = _pair()
    cuda = models["cuda"]
    held = cuda.params["hidden/W"]              # a host array taken before training
    before = np.array(held)
    for m in models.values():
        for _ in range(3):
            m.step(feeds)
    assert not np.array_equal(models["cpu"].params["hidden/W"], before)
    _close(cuda.params, models["cpu"].params)           # item by item
    _close(dict(cuda.params), models["cpu"].get_params())  # dict() reads through the refresh too
    _close({k: v for k, v in cuda.state.items()}, dict(models["cpu"].state))
    assert np.shares_memory(held, cuda.params["hidden/W"])   # refreshed in place
    _close(cuda.get_params(), models["cpu"].get_params())


def test_the_copy_back_happens_only_when_read_after_a_step(monkeypatch):
    models, feeds = _pair(lambda: gn.SGD(lr=0.1))
    cuda = models["cuda"]
    copies = []
    real = cuda.backend.sync_to_host
    monkeypatch.setattr(cuda.backend, "sync_to_host", lambda: (copies.append(1), real())[1])
    for _ in range(5):
        cuda.step(feeds)
    assert copies == []                     # steps alone copy nothing back
    cuda.params["output/b"], cuda.params["hidden/W"], cuda.state
    assert copies == [1]                    # one copy for every read until the next step
    cuda.forward(feeds)
    cuda.params["output/b"]
    assert copies == [1]                    # a forward pass changes nothing to copy
    cuda.step(feeds)
    list(cuda.params.values())
    assert copies == [1, 1]


def test_summary_render_and_writes_see_the_trained_values():
    models, feeds = _pair()
    for m in models.values():
        for _ in range(3):
            m.step(feeds)
    cuda, cpu = models["cuda"], models["cpu"]
    assert gn.render(cuda).source == gn.render(cpu).source     # the picture shows trained values
    assert cuda.summary(print_fn=None).replace("cuda", "cpu") == cpu.summary(print_fn=None)
    # writing one parameter keeps the others' trained values, on the device and on the host
    for m in models.values():
        m.params["output/b"] = np.array([0.25])
        m.step(feeds)
    _close(cuda.params, cpu.params)
    _close(cuda.get_params(), cpu.get_params())


def test_trained_on_cuda_saved_loaded_on_cpu_continues_identically(tmp_path):
    models, feeds = _pair()
    cuda = models["cuda"]
    for _ in range(3):
        cuda.step(feeds)
    gn.save(cuda, tmp_path / "m")
    on_cpu = gn.load(tmp_path / "m", target="cpu")
    _close(on_cpu.params, cuda.params)
    _close(on_cpu.state, cuda.state)
    assert on_cpu.step_count == cuda.step_count == 3
    for m in (cuda, on_cpu):
        for _ in range(2):
            m.step(feeds)
    _close(on_cpu.get_params(), cuda.get_params())
    _close(dict(on_cpu.state), dict(cuda.state))
