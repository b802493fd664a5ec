# cython: language_level=3
"""Benchmark hooks over the engine's own kernels (used by bench/engine.py only).

Kept out of spikecast.ext._engine so that the production module carries no benchmark
entry points. The kernels are the engine's: the same _kernels.pxi source, compiled
here with the same flags, with this module's own SIMD switch (set_simd_level).
"""

# Types and kernels by textual include, as in _engine.pyx (see the comment there).
include "_engine.pxd"
include "_kernels.pxi"

from libc.stdint cimport int32_t, int64_t, uint8_t, uintptr_t
from libc.stdlib cimport free


cdef class LayerBench:
    """One conv or linear layer alone: its plan and 64-byte aligned state buffers.

    ``layer`` is a dict of spikecast.ext.engine._compile_layer (validated there).
    Membranes persist across run() calls, as they would in the engine.
    """

    cdef LayerPlan lp
    cdef list _keep
    cdef void* arena
    cdef float* v
    cdef uint8_t* mask
    cdef int32_t* spikes
    cdef int reset_zero

    def __cinit__(self, dict layer, bint reset_zero):
        cdef char* cur
        cdef size_t n
        self._keep = []
        fill_layer(&self.lp, layer, self._keep)
        if self.lp.kind == KIND_POOL:
            raise ValueError("LayerBench needs a conv or linear layer")
        self.reset_zero = reset_zero
        # v and mask on cache-line boundaries, as in EngineCore; spikes: n_out + 16 slots
        # for the branch-free list builders and the SIMD compress stores.
        n = self.lp.n_out
        self.arena = _alloc(4 * n + n + 4 * (n + 16) + 3 * 64, 1)
        cur = <char*> ((<uintptr_t> self.arena + 63) & ~(<uintptr_t> 63))
        self.v = <float*> cur
        cur += (4 * n + 63) & ~(<size_t> 63)
        self.mask = <uint8_t*> cur
        cur += (n + 63) & ~(<size_t> 63)
        self.spikes = <int32_t*> cur

    def __dealloc__(self):
        free(self.arena)

    def run(self, const int32_t[::1] indices, const int64_t[::1] offsets, bint sweep) -> int:
        """Scatter (and optionally sweep) the layer on given channel-last input spikes
        per step (a CSR pair), no other layer. Returns SynOps done."""
        cdef const LayerPlan* lp = &self.lp
        cdef Py_ssize_t k, n_steps = offsets.shape[0] - 1
        cdef int64_t syn = 0
        if indices.shape[0] == 0 or n_steps < 1:
            raise ValueError("run needs some spikes")
        if offsets[0] != 0 or offsets[n_steps] != indices.shape[0]:
            raise ValueError("bad offsets")
        for k in range(n_steps):
            if offsets[k + 1] < offsets[k]:
                raise ValueError("bad offsets")
        for k in range(indices.shape[0]):
            if not 0 <= indices[k] < lp.n_in:
                raise ValueError("spike index out of range")
        with nogil:
            for k in range(n_steps):
                if lp.kind == KIND_CONV:
                    syn += scatter_conv(lp, self.v, &indices[offsets[k]],
                                        <int> (offsets[k + 1] - offsets[k]), NULL, 0, NULL, NULL)
                else:
                    syn += scatter_linear(lp, self.v, &indices[offsets[k]],
                                          <int> (offsets[k + 1] - offsets[k]), NULL, 0, NULL, NULL)
                if sweep:
                    sweep_spiking(self.v, lp.bias, lp.c_out, lp.n_out, lp.threshold,
                                  self.reset_zero, self.mask, self.spikes, 1)
        return syn


def roofline_scatter(
    float[:, ::1] membrane,
    const float[:, ::1] weight,
    const int32_t[::1] dst_rows,
    const int32_t[::1] src_rows,
    int repeats,
) -> int:
    """Plain scatter-add roofline: membrane[dst_rows[e]] += weight[src_rows[e]], repeated.

    The engine's row kernel on this module's SIMD path; returns the number of floats added.
    """
    cdef Py_ssize_t e, r, n = dst_rows.shape[0]
    cdef int width = membrane.shape[1]
    cdef int path = simd_path
    if weight.shape[1] != width or src_rows.shape[0] != n or repeats < 1:
        raise ValueError("rows must have the same width and the index arrays the same length")
    for e in range(n):
        if not (0 <= dst_rows[e] < membrane.shape[0] and 0 <= src_rows[e] < weight.shape[0]):
            raise ValueError("row index out of range")
    if n == 0:
        return 0
    with nogil:
        for r in range(repeats):
            for e in range(n):
                add_row_simd(&membrane[dst_rows[e], 0], &weight[src_rows[e], 0], width, path)
    return n * width * repeats
