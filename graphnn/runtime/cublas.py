"""cuBLAS called directly (ctypes), so that matrix products can be captured in CUDA graphs.

CuPy brings the cuBLAS library (the ``cuda`` extra), but CuPy refuses to call cuBLAS while
a stream is being captured. The products of a step are plain GEMMs on device buffers, so
graphnn makes those calls itself, on a handle of its own bound to the model's stream, with
a workspace of its own (so that no call allocates during a capture). The library is the one
CuPy loaded, found by its soname.
"""
import ctypes

import numpy as np

OP_N, OP_T = 0, 1
WORKSPACE = 32 << 20       # bytes: what cuBLAS's documentation recommends for Hopper


def _library():
    try:    # CuPy loads libcublas (through cuda.pathfinder or the system) when this imports
        from cupy_backends.cuda.libs import cublas  # noqa: F401
    except Exception:
        pass
    errors = []
    for name in ("libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"):
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        return ctypes.CDLL(load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception as exc:
        errors.append(str(exc))
    raise OSError("cuBLAS library not found: " + "; ".join(errors))


class Cublas:
    """A cuBLAS handle on one stream; ``bind(...)`` gives a GEMM launch with its arguments fixed."""

    def __init__(self, cuda, stream, stream_ptr):
        self.lib = lib = _library()
        p, i = ctypes.c_void_p, ctypes.c_int
        for name, ctype in (("cublasSgemm_v2", ctypes.c_float), ("cublasDgemm_v2", ctypes.c_double)):
            fn = getattr(lib, name)
            fn.argtypes = [p, i, i, i, i, i, ctypes.POINTER(ctype), p, i, p, i, ctypes.POINTER(ctype), p, i]
            fn.restype = i
        self.handle = p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(lib.cublasSetStream_v2(self.handle, p(stream_ptr)), "cublasSetStream")
        self.workspace = cuda.device_array(WORKSPACE, dtype=np.uint8, stream=stream)
        self._check(lib.cublasSetWorkspace_v2(self.handle, p(_pointer(self.workspace)), ctypes.c_size_t(WORKSPACE)),
                    "cublasSetWorkspace")

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise RuntimeError(f"{what} failed: cuBLAS status {status}")

    def bind(self, a, b, out, trans_a, trans_b, scale):
        """``out = scale * op(a) @ op(b)`` for row-major device arrays, as one cuBLAS call.

        cuBLAS is column-major: a row-major (r, c) array is its (c, r) transpose there, so
        the row-major product is computed as ``out^T = op(b)^T op(a)^T``; every leading
        dimension is the stored array's row length."""
        M, P = out.shape
        K = a.shape[0] if trans_a else a.shape[1]
        double = out.dtype == np.float64
        ctype = ctypes.c_double if double else ctypes.c_float
        gemm = self.lib.cublasDgemm_v2 if double else self.lib.cublasSgemm_v2
        alpha, beta = ctype(scale), ctype(0.0)
        args = (self.handle, OP_T if trans_b else OP_N, OP_T if trans_a else OP_N, P, M, K,
                ctypes.byref(alpha), _pointer(b), max(1, b.shape[1]), _pointer(a), max(1, a.shape[1]),
                ctypes.byref(beta), _pointer(out), max(1, P))
        check = self._check

        def run():
            check(gemm(*args), "cublasGemm")
        run.keep = (alpha, beta, a, b, out)      # the scalars and buffers live as long as the launch
        return run

    def __del__(self):
        try:
            if self.handle:
                self.lib.cublasDestroy_v2(self.handle)
        except Exception:
            pass


def _pointer(array):
    return array.__cuda_array_interface__["data"][0]


def cupy_gemm(cupy, cp_stream):
    """The same products through ``cupy.matmul`` on the model's stream: the fallback where the
    direct binding is not usable. CuPy refuses cuBLAS calls during a capture, so plans with
    products then run as eager launches."""
    def bind(a, b, out, trans_a, trans_b, scale):
        A, B, C = cupy.asarray(a), cupy.asarray(b), cupy.asarray(out)
        A, B = (A.T if trans_a else A), (B.T if trans_b else B)

        def run():
            with cp_stream:
                cupy.matmul(A, B, out=C)
                if scale != 1:
                    C.__imul__(scale)
        return run
    return bind


def agrees(bind, cuda, stream, synchronize):
    """Whether ``bind``'s products equal numpy's on small random operands, in float32 and
    float64 and for each transpose: checked once per model before its products use it."""
    rng = np.random.default_rng(0)
    M, K, P = 3, 4, 5
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for trans_a in (False, True):
            for trans_b in (False, True):
                a = rng.normal(size=(K, M) if trans_a else (M, K)).astype(dtype)
                b = rng.normal(size=(P, K) if trans_b else (K, P)).astype(dtype)
                d_a, d_b = cuda.to_device(a, stream=stream), cuda.to_device(b, stream=stream)
                d_out = cuda.to_device(np.full((M, P), np.nan, dtype=dtype), stream=stream)
                bind(d_a, d_b, d_out, trans_a, trans_b, 2.0)()
                got = d_out.copy_to_host(stream=stream)
                synchronize()
                expected = 2.0 * ((a.T if trans_a else a) @ (b.T if trans_b else b))
                if not np.allclose(got, expected, rtol=tol, atol=tol):
                    return False
    return True
