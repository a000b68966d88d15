"""Numerically delicate scalar primitives.

Each is a ``sympy.Function`` whose ``fdiff`` returns its derivative in stable
primitives (Sigmoid' = S*(1-S), Softplus' = Sigmoid), so ``sp.diff`` of any op
that uses them stays finite for large |x|. Each also carries:

* ``definition(x)`` -- the plain SymPy expression it stands for (tests check
  ``fdiff`` against ``sp.diff`` of it);
* ``numpy_impl`` -- a stable NumPy version for the reference executor;
* ``scalar_source`` -- a stable scalar Python body (``math`` functions, and
  ``F(...)`` around every literal so the printer can type it in the kernel's
  dtype) that the CPU and CUDA printers emit as an inlined helper.

Adding a primitive means adding one class here; printers and the reference
executor find it through ``PRIMITIVES``.
"""
import numpy as np
import sympy as sp


class Primitive(sp.Function):
    """Base of graphnn's stable primitives (one argument, real)."""

    nargs = 1
    is_real = True
    helper_name = None  # name of the emitted scalar helper
    derivative_matches_definition = True
    scalar_source = None

    @staticmethod
    def definition(x):
        raise NotImplementedError

    @classmethod
    def exact(cls, x):
        """The exact math the stability lint (:mod:`graphnn.lint`) compares against: the
        definition, or the convention where the primitive is one on purpose (a clamp)."""
        return cls.definition(x)

    @staticmethod
    def numpy_impl(x):
        raise NotImplementedError

    def _eval_evalf(self, prec):
        """A number where the argument is one (``float(Expm1(0))``, a derivative shown at x)."""
        from mpmath.libmp import prec_to_dps
        return self.definition(self.args[0]).evalf(prec_to_dps(prec))


class Sigmoid(Primitive):
    """Logistic sigmoid 1/(1+exp(-x)); S' = S*(1-S).

    Results below the dtype's normal range are 0 (x < -87.34 in float32, -708.4 in float64): a
    subnormal keeps few digits -- sigmoid(-100) in float32 was 27 * 2**-149, 1.6% off, and
    bce's -log of it 99.983 for 100. So alike on every target: float32 fast math flushes
    there (fast_exp) and PyTorch's float32 sigmoid is 0 below -88.7 (its exp overflows)."""

    helper_name = "sigmoid"
    scalar_source = (
        "def sigmoid(x):\n"
        "    # selects, not early returns, so a loop over it vectorises; e = exp(-|x|) <= 1\n"
        "    e = math.exp(-abs(x))\n"
        "    s = F(1.0) / (F(1.0) + e)\n"
        "    r = s if x >= F(0.0) else e * s\n"
        "    # the smallest normal number of the kernel's dtype (F(1e-300) is 0 in float32 only)\n"
        "    if r < (F(1.1754943508222875e-38) if F(1e-300) == F(0.0) else F(2.2250738585072014e-308)):\n"
        "        r = F(0.0)\n"
        "    return r\n"
    )

    @staticmethod
    def definition(x):
        return 1 / (1 + sp.exp(-x))

    @staticmethod
    def numpy_impl(x):
        x = np.asarray(x)
        e = np.exp(-np.abs(x))
        s = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return np.where(s < np.finfo(s.dtype).tiny, s.dtype.type(0), s)

    def fdiff(self, argindex=1):
        s = Sigmoid(self.args[0])
        return s * (1 - s)


class Softplus(Primitive):
    """log(1+exp(x)) computed as max(x,0)+log1p(exp(-|x|)); Softplus' = Sigmoid."""

    helper_name = "softplus"
    scalar_source = (
        "def softplus(x):\n"
        "    return max(x, F(0.0)) + math.log1p(math.exp(-abs(x)))\n"
    )

    @staticmethod
    def definition(x):
        return sp.log(1 + sp.exp(x))

    @staticmethod
    def numpy_impl(x):
        x = np.asarray(x)
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])


class Expm1(Primitive):
    """exp(x) - 1 without the cancellation near 0 (ELU and CELU at x = -1e-3 lost 5 digits in
    float32 as exp(x) - 1); Expm1' = exp."""

    helper_name = "expm1"
    scalar_source = (
        "def expm1(x):\n"
        "    if x > F(709.0):\n"
        "        return F(math.inf)\n"
        "    return math.expm1(x)\n"
    )

    @staticmethod
    def definition(x):
        return sp.exp(x) - 1

    @staticmethod
    def numpy_impl(x):
        with np.errstate(over="ignore"):     # inf is the answer above ~709
            return np.expm1(np.asarray(x))

    def fdiff(self, argindex=1):
        return Expm1(self.args[0]) + 1     # = exp(x), with no bare exp (see Sigmoid's)


class ClampedReciprocal(Primitive):
    """1/max(x, 1e-12): the derivative of ClampedLog, as PyTorch's BCE uses."""

    helper_name = "clamped_reciprocal"
    scalar_source = (
        "def clamped_reciprocal(x):\n"
        "    return F(1.0) / max(x, F(1e-12))\n"
    )

    @staticmethod
    def definition(x):
        return 1 / x

    @staticmethod
    def exact(x):
        return 1 / sp.Max(x, sp.Float(1e-12))

    @staticmethod
    def numpy_impl(x):
        return 1 / np.maximum(np.asarray(x), 1e-12)

    def fdiff(self, argindex=1):
        return -ClampedReciprocal(self.args[0]) ** 2


class ClampedLog(Primitive):
    """max(log(x), -100): PyTorch's clamp in binary cross-entropy."""

    helper_name = "clamped_log"
    scalar_source = (
        "def clamped_log(x):\n"
        "    if x <= F(0.0):\n"
        "        return F(-100.0)\n"
        "    return max(math.log(x), F(-100.0))\n"
    )

    @staticmethod
    def definition(x):
        return sp.log(x)

    @staticmethod
    def exact(x):
        return sp.Max(sp.log(x), -100)

    @staticmethod
    def numpy_impl(x):
        x = np.asarray(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.maximum(np.log(np.where(x <= 0, 0, x)), -100.0)     # NaN stays NaN

    def fdiff(self, argindex=1):
        return ClampedReciprocal(self.args[0])


class StopGradient(Primitive):
    """Identity forward, zero derivative (used for the max-shift of softmax)."""

    helper_name = "stop_gradient"
    derivative_matches_definition = False  # on purpose: gradients do not flow
    scalar_source = "def stop_gradient(x):\n    return x\n"

    @staticmethod
    def definition(x):
        return x

    @staticmethod
    def numpy_impl(x):
        return np.asarray(x)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


def exact_form(expr):
    """``expr`` with each primitive written as its exact math (:meth:`Primitive.exact`), for
    evaluation in high precision (the derivative check at declaration, the stability lint)."""
    return expr.replace(lambda e: isinstance(e, Primitive), lambda e: type(e).exact(e.args[0]))


PRIMITIVES = (Sigmoid, Softplus, Expm1, ClampedLog, ClampedReciprocal, StopGradient)
