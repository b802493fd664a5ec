# cython: language_level=3
"""Compiled event binning for the live path: one call per packet, none per event.

- :func:`bin_events` maps a contiguous EVENT_DTYPE array (packed records, read at the
  field offsets it is given) straight into the engine's input arrays: a flat input
  index (int32) and a 0-based step (int64) per kept event, after the crop and the
  downsample. It counts what it drops: events outside the input, and events before
  the stream's origin.
- :func:`scev_decode` checks the four columns of a SCEV packet and writes its events
  as records in one pass.

Fields are read with memcpy (one unaligned load): packed records and the packet's
u32 column are not aligned to their element size.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy


def scev_decode(  # noqa: PLR0913
    const uint8_t[::1] body,
    Py_ssize_t n,
    int width,
    int height,
    int64_t t0_us,
    uint8_t[::1] out,
    Py_ssize_t itemsize,
    Py_ssize_t off_x,
    Py_ssize_t off_y,
    Py_ssize_t off_t,
    Py_ssize_t off_p,
) -> bool:
    """Check the n events of a SCEV packet body (the bytes after its header: x, y, dt and
    p columns) and write them as records into ``out`` (x, y, t = t0_us + dt, p at the
    given byte offsets, ``itemsize`` bytes each), in one pass. False at the first event
    outside the sensor, back in time or of polarity > 1 (``out`` is then partly written)."""
    if body.shape[0] < 9 * n:
        raise ValueError("packet body shorter than its events")
    if out.shape[0] < itemsize * n:
        raise ValueError("output shorter than the events")
    if n == 0:
        return True
    cdef const uint8_t* b = &body[0]
    cdef uint8_t* o = &out[0]
    cdef uint8_t* rec
    cdef Py_ssize_t i
    cdef uint16_t x, y
    cdef uint32_t dt, prev = 0
    cdef uint8_t pol
    cdef int64_t t
    cdef bint ok = True
    with nogil:
        for i in range(n):
            memcpy(&x, b + 2 * i, 2)
            memcpy(&y, b + 2 * n + 2 * i, 2)
            memcpy(&dt, b + 4 * n + 4 * i, 4)
            pol = b[8 * n + i]
            if x >= width or y >= height or dt < prev or pol > 1:
                ok = False
                break
            prev = dt
            t = t0_us + <int64_t> dt
            rec = o + i * itemsize
            memcpy(rec + off_x, &x, 2)
            memcpy(rec + off_y, &y, 2)
            memcpy(rec + off_t, &t, 8)
            rec[off_p] = pol
    return ok


def bin_events(  # noqa: PLR0913
    const uint8_t[::1] records,
    Py_ssize_t n,
    Py_ssize_t itemsize,
    Py_ssize_t off_x,
    Py_ssize_t off_y,
    Py_ssize_t off_t,
    Py_ssize_t off_p,
    int64_t origin_us,
    int64_t dt_us,
    int channels,
    int height,
    int width,
    int64_t crop_x0,
    int64_t crop_y0,
    int64_t crop_w,
    int64_t crop_h,
    int64_t factor,
    int32_t[::1] out_idx,
    int64_t[::1] out_step,
) -> tuple:
    """Bin n packed event records; returns (kept, outside, before_origin, sorted).

    Kept event j gets ``out_idx[j] = (c * H + y') * W + x'`` and ``out_step[j] =
    (t - origin_us) // dt_us``; c is the polarity with two channels, else 0; (x', y')
    is the position after the crop (``crop_w < 0``: none) and the integer downsample.
    ``sorted`` says whether the kept steps never decrease."""
    if records.shape[0] < n * itemsize or out_idx.shape[0] < n or out_step.shape[0] < n:
        raise ValueError("record or output buffers too small")
    if (n and (off_x + 2 > itemsize or off_y + 2 > itemsize or off_t + 8 > itemsize
               or off_p + 1 > itemsize)) or dt_us < 1 or factor < 1:
        raise ValueError("bad record layout, dt_us or factor")
    if n == 0:
        return 0, 0, 0, True
    cdef const uint8_t* r = &records[0]
    cdef int32_t* oi = &out_idx[0]
    cdef int64_t* os = &out_step[0]
    cdef Py_ssize_t i, kept = 0, outside = 0, before = 0
    cdef uint16_t ux, uy
    cdef int64_t t, xs, ys, step, last = -1
    cdef int c
    cdef bint in_order = True
    with nogil:
        for i in range(n):
            memcpy(&ux, r + off_x, 2)
            memcpy(&uy, r + off_y, 2)
            memcpy(&t, r + off_t, 8)
            c = r[off_p] if channels == 2 else 0
            r += itemsize
            xs = ux
            ys = uy
            if crop_w >= 0:
                xs -= crop_x0
                ys -= crop_y0
                if xs < 0 or ys < 0 or xs >= crop_w or ys >= crop_h:
                    outside += 1
                    continue
            xs //= factor
            ys //= factor
            if xs >= width or ys >= height or c > 1:
                outside += 1
                continue
            if t < origin_us:
                before += 1
                continue
            step = (t - origin_us) // dt_us
            if step < last:
                in_order = False
            last = step
            oi[kept] = <int32_t> ((c * height + ys) * width + xs)
            os[kept] = step
            kept += 1
    return kept, outside, before, in_order
