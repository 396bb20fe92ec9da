"""IR -> Python source -> Numba kernels, one per fusion group (built by the compile step, issue 3).

Nothing here yet: the op definitions in `fusegrad.ir.ops` already carry the scalar expressions
(`Op.expr`) that the code generator will paste into fused loops."""
