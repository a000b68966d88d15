"""``gn.compile(..., target="cuda", wait=False)``: the first calls run on the NumPy reference
executor while the kernels compile in the background, then the calls move to the device.

Under numba's CUDA simulator a build takes a fraction of a second, so the tests hold it back
(the backend's ``warm``, which the build thread runs, waits on an event) to see both phases.
The oracle is the reference target, step for step, in float64."""
import threading

import numpy as np
import pytest

import graphnn as gn

pytestmark = pytest.mark.cuda

X, Y = gn.lecture.noisy_sine(n=48)
FEEDS = {"x": X[:16], "y": Y[:16]}


def _models(**options):
    net = gn.lecture.regression_net()
    return {t: gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target=t, dtype="float64", **options)
            for t in ("cuda", "reference")}


def _close(a, b, what=""):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-10, atol=1e-13, err_msg=what + k)


def _held(model, monkeypatch):
    """Hold ``model``'s background builds until the returned event is set; counts the calls
    that ran on the reference."""
    backend = model.backend
    release, calls = threading.Event(), []
    warm, reference = backend.warm, backend._run_reference

    def held_warm(name):
        assert release.wait(60), "the test never released the build"
        return warm(name)

    def counted(build, name, feeds, batch):
        calls.append(name)
        return reference(build, name, feeds, batch)
    monkeypatch.setattr(backend, "warm", held_warm)
    monkeypatch.setattr(backend, "_run_reference", counted)
    return release, calls


def test_steps_run_on_the_reference_until_the_kernels_are_compiled(monkeypatch):
    models = _models(wait=False)
    cuda, ref = models["cuda"], models["reference"]
    release, calls = _held(cuda, monkeypatch)
    initial = cuda.backend.d_params.copy_to_host()
    try:
        assert cuda.compile_status() == {}
        for _ in range(2):
            losses = [m.step(FEEDS) for m in (cuda, ref)]
            assert losses[0] == losses[1]           # the reference's own numbers, exactly
        assert calls == ["step", "step"] and cuda.compile_status() == {"step": "reference"}
        # the device's copy is untouched; what the model shows is the reference's
        np.testing.assert_array_equal(cuda.backend.d_params.copy_to_host(), initial)
        assert cuda.backend.device_stale
        _close(cuda.get_params(), ref.get_params())
        # a call of 0 rows reads the parameters back from the device unless the host's are newer
        cuda.forward({"x": X[:0]})
        _close(cuda.get_params(), ref.get_params())
    finally:
        release.set()
    cuda.wait_compiled()
    assert cuda.compile_status() == {"step": "compiled"} and cuda.backend._builds["step"].error is None
    for _ in range(3):                              # on the device, from the reference's values
        np.testing.assert_allclose(cuda.step(FEEDS), ref.step(FEEDS), rtol=1e-10)
    assert calls == ["step", "step"] and not cuda.backend.device_stale
    _close(cuda.get_params(), ref.get_params())
    _close(dict(cuda.state), dict(ref.state), "state ")
    assert cuda.step_count == ref.step_count == 5


def test_fit_moves_to_the_device_loop_when_the_build_finishes(monkeypatch):
    models = _models(wait=False, seed=3)
    cuda, ref = models["cuda"], models["reference"]
    release, calls = _held(cuda, monkeypatch)
    backend = cuda.backend

    def after(step, logs):
        if step == 3:       # the first three steps ran on the reference: let the build finish
            release.set()
            backend.wait_compiled()
    try:
        history = cuda.fit({"x": X, "y": Y}, epochs=3, batch_size=8, verbose=False,
                           callbacks=[gn.LambdaCallback(on_step_end=after)])
    finally:
        release.set()
    expected = ref.fit({"x": X, "y": Y}, epochs=3, batch_size=8, verbose=False)
    assert len(calls) == 3 and set(calls) == {"step"}
    assert backend.transfers["losses"] > 0          # the rest ran in the device's loop
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-10)
    _close(cuda.get_params(), ref.get_params())
    assert cuda.step_count == ref.step_count == 18


def test_a_failed_background_build_hands_over_to_compiling_on_the_first_device_call(monkeypatch):
    models = _models(wait=False)
    cuda, ref = models["cuda"], models["reference"]

    def broken(name):
        raise RuntimeError("the scratch run failed")
    monkeypatch.setattr(cuda.backend, "warm", broken)
    first = cuda.step(FEEDS)
    cuda.wait_compiled()
    build = cuda.backend._builds["step"]
    assert isinstance(build.error, RuntimeError) and build.stage == "compiled"
    assert first == ref.step(FEEDS)
    for _ in range(2):
        np.testing.assert_allclose(cuda.step(FEEDS), ref.step(FEEDS), rtol=1e-10)
    _close(cuda.get_params(), ref.get_params())


def test_a_real_build_compiles_each_program_once_and_keeps_the_model_untouched():
    """Without holding anything: the scratch run of the step leaves the model's parameters,
    state and step count as they were, and the forward program builds on its own."""
    cuda = _models(wait=False)["cuda"]
    before = cuda.get_params()
    build = cuda.backend.prepare("step", 16)
    assert build is cuda.backend.prepare("step", 16)        # one build per program
    cuda.wait_compiled(["step"])
    assert build.stage == "compiled" and build.error is None and build.timings["kernels"] > 0
    _close(cuda.get_params(), before)
    np.testing.assert_array_equal(cuda.backend.d_state.copy_to_host(), 0)
    assert cuda.step_count == 0 and cuda.compile_status() == {"step": "compiled"}
    out = cuda.forward(FEEDS)
    cuda.wait_compiled()
    assert cuda.compile_status() == {"step": "compiled", "forward": "compiled"}
    np.testing.assert_allclose(cuda.forward(FEEDS)["y_hat"], out["y_hat"], rtol=1e-12)


def test_with_wait_every_program_is_compiled_as_it_is_called(capsys):
    cuda = _models(wait=True)["cuda"]
    assert cuda.backend.prepare("step", 8) is None
    assert set(cuda.compile_status().values()) == {"compiled"}
    cuda.fit({"x": X, "y": Y}, epochs=1, batch_size=16)
    assert "compiling the training step of 'regression' ... as the first step runs" in capsys.readouterr().out
