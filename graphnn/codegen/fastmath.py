"""Vectorisable float32 forms of tanh, erf and exp (CPU, ``fast_math=True``).

A loop that calls libm's ``tanhf``/``erff``/``expf`` does not vectorise; these
polynomial and rational forms do. Accuracy over all float32 inputs, measured
against float64 references (tests/test_compile_cpu.py checks the bounds quoted
in each helper's first comment line):

* ``fast_tanh``: odd 13th over even 6th degree rational on [-7.9053, 7.9053],
  exactly +-1 outside (tanh is within 2.7e-7 of +-1 there); absolute error <= 4e-7.
* ``fast_erf``: odd 13th over even 8th degree rational on [-4, 4], clamped
  outside; absolute error <= 5e-7.
* ``fast_exp``: 2**k * p(r) with r = x - k ln 2 (|r| <= ln2/2, degree-6 Taylor
  polynomial) and 2**k as two factors, each made from its bit pattern (the exponent
  field k + bias, by ``_from_bits``); relative error <= 3e-7 for every normal result;
  results below the normal range (x < -87.336544, where exp(x) < 2**-126) are 0, and
  results above it (x > 88.722839) are inf. (A table of the powers of two, read by
  index, made the loop gather: a GELU derivative loop took 4x as long.)

NaN passes through each of them as NaN. Their sources use ``_F(...)`` literals
like every printed expression.
"""

FAST_NAMES = {"tanh": "fast_tanh", "erf": "fast_erf", "exp": "fast_exp"}

# the float with a given bit pattern: an LLVM bitcast, which vectorises. fast_exp builds 2**k
# with it: the exponent field holds k + bias. Numba widens int32 arithmetic to int64, so the
# integer is first cast to the float's width (FLOAT and INT are the dtype's)
FROM_BITS = '''from numba import types as _types  # noqa: E402
from numba.extending import intrinsic as _intrinsic  # noqa: E402


@_intrinsic
def _from_bits(typingctx, bits):
    if not isinstance(bits, _types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], _types.INT)
        return builder.bitcast(value, context.get_value_type(_types.FLOAT))
    return _types.FLOAT(bits), codegen
'''


def from_bits(dtype="float32"):
    """The source of ``_from_bits`` for ``dtype``: the ``dtype`` float with the integer's bits."""
    integer = {"float32": "int32", "float64": "int64"}[dtype]
    return FROM_BITS.replace("_types.INT", f"_types.{integer}").replace("_types.FLOAT", f"_types.{dtype}")


# the exponent field of each float type: (integer type of the same width, bias, shift)
EXPONENT_FIELD = {"float32": ("np.int32", 127, 23), "float64": ("np.int64", 1023, 52)}

FAST_TANH = '''def fast_tanh(x):
    # accuracy: absolute error <= 4e-7 (rational approximation, vectorises: no libm call)
    # exactly +-1 for |x| >= 7.9053, where tanh is within 2.7e-7 of it (a clamp of x there left
    # 0.99999976, so 1 - tanh^2 was 4.8e-7 at any |x|); comparisons, not max/min, so NaN
    # passes through as NaN; selects, not early returns, so the loop vectorises
    x2 = x * x
    p = _F(-2.76076847742355e-16)
    p = p * x2 + _F(2.00018790482477e-13)
    p = p * x2 + _F(-8.60467152213735e-11)
    p = p * x2 + _F(5.12229709037114e-08)
    p = p * x2 + _F(1.48572235717979e-05)
    p = p * x2 + _F(6.37261928875436e-04)
    p = p * x2 + _F(4.89352455891786e-03)
    p = p * x
    q = _F(1.19825839466702e-06)
    q = q * x2 + _F(1.18534705686654e-04)
    q = q * x2 + _F(2.26843463243900e-03)
    q = q * x2 + _F(4.89352518554385e-03)
    r = p / q
    if x >= _F(7.90531110763549805):
        r = _F(1.0)
    elif x <= _F(-7.90531110763549805):
        r = _F(-1.0)
    return r
'''

FAST_ERF = '''def fast_erf(x):
    # accuracy: absolute error <= 5e-7 (rational approximation on [-4, 4], clamped outside)
    if x > _F(4.0):
        x = _F(4.0)
    elif x < _F(-4.0):
        x = _F(-4.0)
    x2 = x * x
    p = _F(-2.72614225801306e-10)
    p = p * x2 + _F(2.77068142495902e-08)
    p = p * x2 + _F(-2.10102402082508e-06)
    p = p * x2 + _F(-5.69250639462346e-05)
    p = p * x2 + _F(-7.34990630326855e-04)
    p = p * x2 + _F(-2.95459980854025e-03)
    p = p * x2 + _F(-1.60960333262415e-02)
    p = p * x
    q = _F(-1.45660718464996e-05)
    q = q * x2 + _F(-2.13374055278905e-04)
    q = q * x2 + _F(-1.68282697438203e-03)
    q = q * x2 + _F(-7.37332916720468e-03)
    q = q * x2 + _F(-1.42647390514189e-02)
    return p / q
'''

FAST_EXP = '''def fast_exp(x):
    # accuracy: relative error <= 3e-7 for normal results (branch-free, so it vectorises)
    # results below float32's normal range are flushed to 0 without computing them:
    # an underflowing multiply costs a microcode assist of ~100 cycles on x86. The switch is
    # the last x whose exp is normal (-87.33654022 -> 1.1754997e-38; one ulp below it is
    # subnormal); at -87.33 it flushed normal results, 0 for 1.18e-38
    tiny = x < _F(-87.33654022216797)
    if x > _F(100.0):
        x = _F(100.0)
    elif tiny:
        x = _F(0.0)    # computed, then replaced by 0: an x near the switch makes p * 2**-126 subnormal
    n = np.floor(x * _F(1.4426950408889634) + _F(0.5))
    r = x - n * _F(0.693145751953125) - n * _F(1.428606765330187e-06)
    p = _F(0.001388888888888889)
    p = p * r + _F(0.008333333333333333)
    p = p * r + _F(0.041666666666666664)
    p = p * r + _F(0.16666666666666666)
    p = p * r + _F(0.5)
    p = p * r + _F(1.0)
    p = p * r + _F(1.0)
    # 2**n in two factors, each within float32's range, applied one after the other:
    # p * 2**128 stays finite for p < 1. Each factor 2**j is the float whose exponent field
    # is j + BIAS (mantissa 0); j stays in [-63, 127] (n >= -126 where not tiny)
    k = max(np.int32(-254), min(np.int32(254), np.int32(n)))
    k1 = k >> 1
    value = (p * _from_bits((INT(k1) + INT(BIAS)) << INT(SHIFT))) * _from_bits((INT(k - k1) + INT(BIAS)) << INT(SHIFT))
    return _F(0.0) if tiny else value
'''


def fast_helpers(dtype="float32"):
    """The helpers' sources for ``dtype`` (fast_exp writes the exponent field of its type)."""
    integer, bias, shift = EXPONENT_FIELD[dtype]
    exp = FAST_EXP.replace("INT(", f"{integer}(").replace("(BIAS)", f"({bias})").replace("(SHIFT)", f"({shift})")
    return [FAST_TANH, FAST_ERF, exp]


FAST_HELPERS = fast_helpers()
