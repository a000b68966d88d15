"""Stage 3: lowering -- programs of nodes to the target-neutral kernel IR."""
from .ir import BATCH, Buffer, Contract, Fused, KernelProgram, Reduce, Rows, Term
from .passes import PASSES, describe, lower

__all__ = ["PASSES", "BATCH", "Buffer", "Contract", "Fused", "KernelProgram", "Reduce", "Rows", "Term", "describe", "lower"]
