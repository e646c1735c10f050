// Kernels of the native inference engine (crates/its-gpu/src/engine/cuda.rs), NCHW, FP32 or
// FP16 storage (ENGINE_F16) with FP32 arithmetic.
// Semantics: crates/its-gpu/src/engine/cpu.rs is the reference for each kernel here.
// Convolutions run on cuDNN; these kernels do what follows and surrounds them: bias plus
// activation after a convolution, element-wise ops with broadcasting, concatenation (each
// input copied into its slice of the output), narrowing (Split/Slice), pooling, nearest
// upsampling, transposes, small batched matrix products and softmax.

#define ACT_NONE 0
#define ACT_SIGMOID 1
#define ACT_SILU 2
#define ACT_RELU 3
#define ACT_LEAKY 4
#define ACT_EXP 5

#define BIN_ADD 0
#define BIN_SUB 1
#define BIN_MUL 2
#define BIN_DIV 3

#define MAX_RANK 6
#define NEG_INF __int_as_float(0xff800000)

// Element type of every activation buffer: float, or IEEE half (as its 16 bits) when compiled
// with ENGINE_F16; arithmetic is always float.
#ifdef ENGINE_F16
typedef unsigned short elem_t;
__device__ __forceinline__ float ld(elem_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
}
__device__ __forceinline__ elem_t st(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#else
typedef float elem_t;
__device__ __forceinline__ float ld(elem_t v) { return v; }
__device__ __forceinline__ elem_t st(float f) { return f; }
#endif

__device__ __forceinline__ float act_apply(float x, int act, float alpha) {
    switch (act) {
    case ACT_SIGMOID: return 1.0f / (1.0f + __expf(-x));
    case ACT_SILU: return x / (1.0f + __expf(-x));
    case ACT_RELU: return fmaxf(x, 0.0f);
    case ACT_LEAKY: return x >= 0.0f ? x : alpha * x;
    case ACT_EXP: return __expf(x);
    default: return x;
    }
}

// Index arithmetic: every kernel below runs its loop in 32-bit unsigned arithmetic when the
// element count fits (a 64-bit division costs several times a 32-bit one, and these kernels
// are otherwise memory-bound), in 64-bit only for larger tensors.
#define FITS32(n) ((n) <= 0xffffffffLL)

// y[n, c, hw] = act(y[n, c, hw] + bias[c]) (+ res[n, c, hw] when res is not null: a
// residual connection), in place after cuDNN wrote the convolution.
template <typename I>
__device__ __forceinline__ void bias_act_body(elem_t* y, const float* __restrict__ bias,
                                              const elem_t* __restrict__ res, I total,
                                              I channels, I hw, int act, float alpha) {
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < total; i += stride) {
        I c = (i / hw) % channels;
        float v = act_apply(ld(y[i]) + bias[c], act, alpha);
        y[i] = st(res ? v + ld(res[i]) : v);
    }
}

extern "C" __global__ void bias_act(elem_t* y, const float* __restrict__ bias,
                                    const elem_t* __restrict__ res, long long total,
                                    int channels, int hw, int act, float alpha) {
    if (FITS32(total))
        bias_act_body<unsigned>(y, bias, res, (unsigned)total, (unsigned)channels, (unsigned)hw,
                                act, alpha);
    else
        bias_act_body<long long>(y, bias, res, total, channels, hw, act, alpha);
}

// y[i] += r[i]: the residual of a convolution whose kernel does not add it itself.
extern "C" __global__ void add_into(elem_t* y, const elem_t* __restrict__ r, long long n) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = st(ld(y[i]) + ld(r[i]));
}

// 16 bytes of elements at a time (8 halves or 4 floats).
#define VEC (16 / (int)sizeof(elem_t))
union Vec16 {
    uint4 u;
    elem_t e[16 / sizeof(elem_t)];
};

// bias_act on 16-byte vectors: the caller guarantees that no vector crosses a channel
// boundary (channels-last with channels % VEC == 0, hw = 1; or NCHW with hw % VEC == 0) and
// that y is 16-byte aligned. nvec = total / VEC.
// res, when not null, is added after the activation (16-byte aligned like y).
extern "C" __global__ void bias_act_vec(elem_t* y, const float* __restrict__ bias,
                                        const elem_t* __restrict__ res, unsigned nvec,
                                        unsigned channels, unsigned hw, int act, float alpha) {
    uint4* v = reinterpret_cast<uint4*>(y);
    const uint4* rv = reinterpret_cast<const uint4*>(res);
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
        Vec16 d, r;
        d.u = v[i];
        if (rv) r.u = rv[i];
        unsigned first = i * VEC;
        float f[VEC];
        if (hw == 1) {
            unsigned c0 = first % channels;
#pragma unroll
            for (int k = 0; k < VEC; ++k) f[k] = act_apply(ld(d.e[k]) + bias[c0 + k], act, alpha);
        } else {
            float b = bias[(first / hw) % channels];
#pragma unroll
            for (int k = 0; k < VEC; ++k) f[k] = act_apply(ld(d.e[k]) + b, act, alpha);
        }
        if (rv) {
#pragma unroll
            for (int k = 0; k < VEC; ++k) f[k] += ld(r.e[k]);
        }
#pragma unroll
        for (int k = 0; k < VEC; ++k) d.e[k] = st(f[k]);
        v[i] = d.u;
    }
}

template <typename I>
__device__ __forceinline__ void act_body(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                         I n, int act, float alpha) {
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) y[i] = st(act_apply(ld(x[i]), act, alpha));
}

extern "C" __global__ void act(const elem_t* __restrict__ x, elem_t* __restrict__ y, long long n,
                               int act, float alpha) {
    if (FITS32(n))
        act_body<unsigned>(x, y, (unsigned)n, act, alpha);
    else
        act_body<long long>(x, y, n, act, alpha);
}

// act on 16-byte vectors: x and y 16-byte aligned, nvec = n / VEC.
extern "C" __global__ void act_vec(const uint4* __restrict__ x, uint4* __restrict__ y,
                                   unsigned nvec, int act, float alpha) {
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
        Vec16 d;
        d.u = x[i];
#pragma unroll
        for (int k = 0; k < VEC; ++k) d.e[k] = st(act_apply(ld(d.e[k]), act, alpha));
        y[i] = d.u;
    }
}

__device__ __forceinline__ float bin_apply(float va, float vb, int op) {
    switch (op) {
    case BIN_ADD: return va + vb;
    case BIN_SUB: return va - vb;
    case BIN_MUL: return va * vb;
    default: return va / vb;
    }
}

struct Strides {
    int rank;
    long long shape[MAX_RANK];   // output shape
    long long a[MAX_RANK];       // strides of a over the output dims (0 = broadcast)
    long long b[MAX_RANK];
};

template <typename I>
__device__ __forceinline__ void binary_body(const elem_t* __restrict__ a,
                                            const elem_t* __restrict__ b, elem_t* __restrict__ y,
                                            I n, int op, const Strides& s) {
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        I rem = i, ia = 0, ib = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            I dim = (I)s.shape[d];
            I c = rem % dim;
            rem /= dim;
            ia += c * (I)s.a[d];
            ib += c * (I)s.b[d];
        }
        y[i] = st(bin_apply(ld(a[ia]), ld(b[ib]), op));
    }
}

extern "C" __global__ void binary(const elem_t* __restrict__ a, const elem_t* __restrict__ b,
                                  elem_t* __restrict__ y, long long n, int op, Strides s) {
    if (FITS32(n))
        binary_body<unsigned>(a, b, y, (unsigned)n, op, s);
    else
        binary_body<long long>(a, b, y, n, op, s);
}

// binary for two inputs of the output's own shape (no broadcasting), 16 bytes at a time:
// nvec = n / VEC, every pointer 16-byte aligned.
extern "C" __global__ void binary_same_vec(const elem_t* __restrict__ a,
                                           const elem_t* __restrict__ b, elem_t* __restrict__ y,
                                           unsigned nvec, int op) {
    const uint4* va = reinterpret_cast<const uint4*>(a);
    const uint4* vb = reinterpret_cast<const uint4*>(b);
    uint4* vy = reinterpret_cast<uint4*>(y);
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
        Vec16 x, z, r;
        x.u = va[i];
        z.u = vb[i];
#pragma unroll
        for (int k = 0; k < VEC; ++k) r.e[k] = st(bin_apply(ld(x.e[k]), ld(z.e[k]), op));
        vy[i] = r.u;
    }
}

// Gather by strides: y[i] = x[sum(coord_d(i) * s.a[d])] over y's shape s.shape
// (Transpose: the permuted input strides).
template <typename I>
__device__ __forceinline__ void permute_body(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                             I n, const Strides& s) {
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        I rem = i, ia = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            I dim = (I)s.shape[d];
            I c = rem % dim;
            rem /= dim;
            ia += c * (I)s.a[d];
        }
        y[i] = x[ia];
    }
}

extern "C" __global__ void permute(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                   long long n, Strides s) {
    if (FITS32(n))
        permute_body<unsigned>(x, y, (unsigned)n, s);
    else
        permute_body<long long>(x, y, n, s);
}

// Copies x viewed as [outer, rows, inner] rows start, start+step, ... into y viewed as
// [outer, y_rows, inner] at row offset y_off: Concat (step 1, offset = earlier inputs) and
// Narrow (offset 0).
template <typename I>
__device__ __forceinline__ void copy_rows_body(const elem_t* __restrict__ x,
                                               elem_t* __restrict__ y, I outer, I rows, I x_rows,
                                               I y_rows, I inner, I start, I step, I y_off) {
    I n = outer * rows * inner;
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        I k = i % inner;
        I r = (i / inner) % rows;
        I o = i / (inner * rows);
        y[(o * y_rows + y_off + r) * inner + k] = x[(o * x_rows + start + r * step) * inner + k];
    }
}

extern "C" __global__ void copy_rows(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                     long long outer, long long rows, long long x_rows,
                                     long long y_rows, long long inner, long long start,
                                     long long step, long long y_off) {
    if (FITS32(outer * (x_rows > y_rows ? x_rows : y_rows) * inner))
        copy_rows_body<unsigned>(x, y, (unsigned)outer, (unsigned)rows, (unsigned)x_rows,
                                 (unsigned)y_rows, (unsigned)inner, (unsigned)start,
                                 (unsigned)step, (unsigned)y_off);
    else
        copy_rows_body<long long>(x, y, outer, rows, x_rows, y_rows, inner, start, step, y_off);
}

// copy_rows with step 1 in 16-byte units: `outer` runs of `run` units each, read from
// x + o * x_pitch + x_off and written to y + o * y_pitch + y_off (all in 16-byte units; the
// caller checks that every byte offset is a multiple of 16).
extern "C" __global__ void copy_runs_vec(const uint4* __restrict__ x, uint4* __restrict__ y,
                                         unsigned outer, unsigned run, unsigned x_pitch,
                                         unsigned x_off, unsigned y_pitch, unsigned y_off) {
    unsigned n = outer * run;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned o = i / run, r = i - o * run;
        y[o * y_pitch + y_off + r] = x[o * x_pitch + x_off + r];
    }
}

template <typename I>
__device__ __forceinline__ void maxpool2d_body(const elem_t* __restrict__ x,
                                               elem_t* __restrict__ y, I planes, int h, int w,
                                               int oh, int ow, int kh, int kw, int sh, int sw,
                                               int pt, int pl) {
    I n = planes * oh * ow;
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int j = (int)(i % ow);
        int r = (int)((i / ow) % oh);
        I p = i / ((I)ow * oh);
        const elem_t* src = x + p * h * w;
        float m = NEG_INF;
        for (int ki = 0; ki < kh; ++ki) {
            int rr = r * sh + ki - pt;
            if (rr < 0 || rr >= h) continue;
            for (int kj = 0; kj < kw; ++kj) {
                int cc = j * sw + kj - pl;
                if (cc < 0 || cc >= w) continue;
                m = fmaxf(m, ld(src[rr * w + cc]));
            }
        }
        y[i] = st(m);
    }
}

extern "C" __global__ void maxpool2d(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                     long long planes, int h, int w, int oh, int ow, int kh,
                                     int kw, int sh, int sw, int pt, int pl) {
    long long big = planes * (long long)(h * w > oh * ow ? h * w : oh * ow);
    if (FITS32(big))
        maxpool2d_body<unsigned>(x, y, (unsigned)planes, h, w, oh, ow, kh, kw, sh, sw, pt, pl);
    else
        maxpool2d_body<long long>(x, y, planes, h, w, oh, ow, kh, kw, sh, sw, pt, pl);
}

template <typename I>
__device__ __forceinline__ void upsample_body(const elem_t* __restrict__ x,
                                              elem_t* __restrict__ y, I planes, int h, int w,
                                              int fh, int fw) {
    int oh = h * fh, ow = w * fw;
    I n = planes * oh * ow;
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int j = (int)(i % ow);
        int r = (int)((i / ow) % oh);
        I p = i / ((I)ow * oh);
        y[i] = x[(p * h + r / fh) * w + j / fw];
    }
}

extern "C" __global__ void upsample_nearest(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                            long long planes, int h, int w, int fh, int fw) {
    if (FITS32(planes * (long long)h * fh * w * fw))
        upsample_body<unsigned>(x, y, (unsigned)planes, h, w, fh, fw);
    else
        upsample_body<long long>(x, y, planes, h, w, fh, fw);
}

// y[b] = a[b] (m x k) * bm[b] (k x n), 16x16 tiles in shared memory.
#define TILE 16
extern "C" __global__ void matmul(const elem_t* __restrict__ a, const elem_t* __restrict__ bm,
                                  elem_t* __restrict__ y, int m, int n, int k) {
    __shared__ float ta[TILE][TILE];
    __shared__ float tb[TILE][TILE + 1];
    int b = blockIdx.z;
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    const elem_t* A = a + (long long)b * m * k;
    const elem_t* B = bm + (long long)b * k * n;
    float acc = 0.0f;
    for (int t = 0; t < k; t += TILE) {
        int ac = t + threadIdx.x, br = t + threadIdx.y;
        ta[threadIdx.y][threadIdx.x] = (row < m && ac < k) ? ld(A[(long long)row * k + ac]) : 0.0f;
        tb[threadIdx.y][threadIdx.x] = (br < k && col < n) ? ld(B[(long long)br * n + col]) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int p = 0; p < TILE; ++p) acc += ta[threadIdx.y][p] * tb[p][threadIdx.x];
        __syncthreads();
    }
    if (row < m && col < n) y[((long long)b * m + row) * n + col] = st(acc);
}

// Softmax of x viewed as [outer, len, inner] along len; one thread per (outer, inner).
extern "C" __global__ void softmax(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                   long long outer, int len, long long inner) {
    long long n = outer * inner;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        long long o = i / inner, in = i % inner;
        const elem_t* src = x + o * len * inner + in;
        elem_t* dst = y + o * len * inner + in;
        float mx = NEG_INF;
        for (int j = 0; j < len; ++j) mx = fmaxf(mx, ld(src[(long long)j * inner]));
        float sum = 0.0f;
        for (int j = 0; j < len; ++j) sum += __expf(ld(src[(long long)j * inner]) - mx);
        float inv = 1.0f / sum;
        for (int j = 0; j < len; ++j)
            dst[(long long)j * inner] = st(__expf(ld(src[(long long)j * inner]) - mx) * inv);
    }
}

// Channels-last variants (layout.rs stores the tensors between convolutions [n, h, w, c]).
template <typename I>
__device__ __forceinline__ void maxpool2d_nhwc_body(const elem_t* __restrict__ x,
                                                    elem_t* __restrict__ y, I n_img, int h,
                                                    int w, int c, int oh, int ow, int kh, int kw,
                                                    int sh, int sw, int pt, int pl, int xp,
                                                    int yp) {
    I n = n_img * oh * ow * c;
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int ch = (int)(i % c);
        I pix = i / c;
        int j = (int)(pix % ow);
        int r = (int)((pix / ow) % oh);
        I b = pix / ((I)ow * oh);
        const elem_t* src = x + b * h * w * xp;
        float m = NEG_INF;
        for (int ki = 0; ki < kh; ++ki) {
            int rr = r * sh + ki - pt;
            if (rr < 0 || rr >= h) continue;
            for (int kj = 0; kj < kw; ++kj) {
                int cc = j * sw + kj - pl;
                if (cc < 0 || cc >= w) continue;
                m = fmaxf(m, ld(src[((I)rr * w + cc) * xp + ch]));
            }
        }
        y[pix * yp + ch] = st(m);
    }
}

// Pixels of x and y lie xp and yp elements apart (c when packed; a concatenation's width
// when the tensor is its slice).
extern "C" __global__ void maxpool2d_nhwc(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                          long long n_img, int h, int w, int c, int oh, int ow,
                                          int kh, int kw, int sh, int sw, int pt, int pl, int xp,
                                          int yp) {
    int p = xp > yp ? xp : yp;
    long long big = n_img * (long long)p * (h * w > oh * ow ? h * w : oh * ow);
    if (FITS32(big))
        maxpool2d_nhwc_body<unsigned>(x, y, (unsigned)n_img, h, w, c, oh, ow, kh, kw, sh, sw, pt,
                                      pl, xp, yp);
    else
        maxpool2d_nhwc_body<long long>(x, y, n_img, h, w, c, oh, ow, kh, kw, sh, sw, pt, pl, xp,
                                       yp);
}

// maxpool2d_nhwc on 16-byte vectors of channels: cu = c / VEC units per pixel, the pixels of
// x and y xpu and ypu units apart. The host checks that every index fits 32 bits.
extern "C" __global__ void maxpool2d_nhwc_vec(const uint4* __restrict__ x, uint4* __restrict__ y,
                                              unsigned n_img, int h, int w, unsigned cu, int oh,
                                              int ow, int kh, int kw, int sh, int sw, int pt,
                                              int pl, unsigned xpu, unsigned ypu) {
    unsigned n = n_img * (unsigned)(oh * ow) * cu;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned ch = i % cu, pix = i / cu;
        int j = (int)(pix % (unsigned)ow);
        unsigned rest = pix / (unsigned)ow;
        int r = (int)(rest % (unsigned)oh);
        unsigned b = rest / (unsigned)oh;
        const uint4* src = x + b * (unsigned)(h * w) * xpu + ch;
        float m[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) m[k] = NEG_INF;
        for (int ki = 0; ki < kh; ++ki) {
            int rr = r * sh + ki - pt;
            if (rr < 0 || rr >= h) continue;
            for (int kj = 0; kj < kw; ++kj) {
                int cc = j * sw + kj - pl;
                if (cc < 0 || cc >= w) continue;
                Vec16 v;
                v.u = src[(unsigned)(rr * w + cc) * xpu];
#pragma unroll
                for (int k = 0; k < VEC; ++k) m[k] = fmaxf(m[k], ld(v.e[k]));
            }
        }
        Vec16 o;
#pragma unroll
        for (int k = 0; k < VEC; ++k) o.e[k] = st(m[k]);
        y[pix * ypu + ch] = o.u;
    }
}

template <typename I>
__device__ __forceinline__ void upsample_nhwc_body(const elem_t* __restrict__ x,
                                                   elem_t* __restrict__ y, I n_img, int h, int w,
                                                   int c, int fh, int fw, int xp, int yp) {
    int oh = h * fh, ow = w * fw;
    I n = n_img * oh * ow * c;
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    I stride = (I)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int ch = (int)(i % c);
        I pix = i / c;
        int j = (int)(pix % ow);
        int r = (int)((pix / ow) % oh);
        I b = pix / ((I)ow * oh);
        y[pix * yp + ch] = x[((b * h + r / fh) * w + j / fw) * xp + ch];
    }
}

// Pixels of x and y lie xp and yp elements apart (see maxpool2d_nhwc).
extern "C" __global__ void upsample_nearest_nhwc(const elem_t* __restrict__ x,
                                                 elem_t* __restrict__ y, long long n_img, int h,
                                                 int w, int c, int fh, int fw, int xp, int yp) {
    int p = xp > yp ? xp : yp;
    if (FITS32(n_img * (long long)h * fh * w * fw * p))
        upsample_nhwc_body<unsigned>(x, y, (unsigned)n_img, h, w, c, fh, fw, xp, yp);
    else
        upsample_nhwc_body<long long>(x, y, n_img, h, w, c, fh, fw, xp, yp);
}

// y[b, s, r] = x[b, r, s] for x viewed as [batch, R, S] (NCHW <-> NHWC: R = c, S = h * w or
// R = h * w, S = c), through 32x32 tiles in shared memory so that both the reads and the
// writes are coalesced. Grid (ceil(S / 32), ceil(R / 32), batch), block (32, 8).
extern "C" __global__ void transpose_tiles(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                           unsigned R, unsigned S) {
    __shared__ elem_t tile[32][33];
    unsigned b = blockIdx.z;
    unsigned s0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    const elem_t* src = x + (size_t)b * R * S;
    elem_t* dst = y + (size_t)b * R * S;
    for (unsigned k = threadIdx.y; k < 32; k += 8) {
        unsigned r = r0 + k, s = s0 + threadIdx.x;
        if (r < R && s < S) tile[k][threadIdx.x] = src[(size_t)r * S + s];
    }
    __syncthreads();
    for (unsigned k = threadIdx.y; k < 32; k += 8) {
        unsigned s = s0 + k, r = r0 + threadIdx.x;
        if (r < R && s < S) dst[(size_t)s * R + r] = tile[threadIdx.x][k];
    }
}

// y[b, s, r, :] = x[b, r, s, :] for rows of `ku` 16-byte units (a transpose of two middle
// dimensions over a contiguous inner block).
extern "C" __global__ void transpose_rows_vec(const uint4* __restrict__ x, uint4* __restrict__ y,
                                              unsigned batch, unsigned R, unsigned S,
                                              unsigned ku) {
    unsigned n = batch * R * S * ku;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned k = i % ku, row = i / ku;
        unsigned s = row % S, rest = row / S;
        unsigned r = rest % R, b = rest / R;
        y[((b * S + s) * R + r) * ku + k] = x[((b * R + r) * S + s) * ku + k];
    }
}

// Softmax over the last axis of x viewed as [rows, len]: one warp per row.
extern "C" __global__ void softmax_rows(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                        unsigned rows, unsigned len) {
    unsigned warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    unsigned lane = threadIdx.x % 32;
    unsigned warps = gridDim.x * blockDim.x / 32;
    for (unsigned row = warp; row < rows; row += warps) {
        const elem_t* src = x + (size_t)row * len;
        elem_t* dst = y + (size_t)row * len;
        float mx = NEG_INF;
        for (unsigned j = lane; j < len; j += 32) mx = fmaxf(mx, ld(src[j]));
        for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float sum = 0.0f;
        for (unsigned j = lane; j < len; j += 32) sum += __expf(ld(src[j]) - mx);
        for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        float inv = 1.0f / sum;
        for (unsigned j = lane; j < len; j += 32) dst[j] = st(__expf(ld(src[j]) - mx) * inv);
    }
}

// Channels-last nearest upsampling, 16 bytes a thread (c % VEC == 0): cu = c / VEC units
// per pixel.
// Pixels of x and y lie xpu and ypu 16-byte units apart (cu when packed).
extern "C" __global__ void upsample_nearest_nhwc_vec(const uint4* __restrict__ x,
                                                     uint4* __restrict__ y, unsigned n_img,
                                                     unsigned h, unsigned w, unsigned cu,
                                                     unsigned fh, unsigned fw, unsigned xpu,
                                                     unsigned ypu) {
    unsigned oh = h * fh, ow = w * fw;
    unsigned n = n_img * oh * ow * cu;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned ch = i % cu, pix = i / cu;
        unsigned j = pix % ow, rest = pix / ow;
        unsigned r = rest % oh, b = rest / oh;
        y[pix * ypu + ch] = x[((b * h + r / fh) * w + j / fw) * xpu + ch];
    }
}

// Concatenation in one launch: y viewed as `outer` rows of `total` 16-byte units, input k
// supplying units [off[k], off[k] + run[k]) of each row (at most 8 inputs).
struct ConcatIn {
    const uint4* x[8];
    unsigned run[8];
    unsigned off[8];
    int n;
    unsigned total;
};

extern "C" __global__ void concat_vec(uint4* __restrict__ y, unsigned outer, ConcatIn c) {
    unsigned n = outer * c.total;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned o = i / c.total, r = i - o * c.total;
        int k = 0;
        while (k + 1 < c.n && r >= c.off[k + 1]) ++k;
        y[i] = c.x[k][o * c.run[k] + (r - c.off[k])];
    }
}

// transpose_tiles for a small dimension (R or S at most 16), where 32x32 tiles would leave
// most threads idle: y[b, s, r] = x[b, r, s], one thread per (b, s) walking r when R is the
// small one (small_r != 0), else one thread per (b, r) walking s. Either way the threads of a
// warp touch consecutive addresses on the long dimension.
extern "C" __global__ void transpose_small(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                           unsigned batch, unsigned R, unsigned S, int small_r) {
    unsigned long_dim = small_r ? S : R;
    unsigned n = batch * long_dim;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned b = i / long_dim, l = i - b * long_dim;
        const elem_t* src = x + (size_t)b * R * S;
        elem_t* dst = y + (size_t)b * R * S;
        if (small_r) {
            for (unsigned r = 0; r < R; ++r) dst[(size_t)l * R + r] = src[(size_t)r * S + l];
        } else {
            for (unsigned s = 0; s < S; ++s) dst[(size_t)s * R + l] = src[(size_t)l * S + s];
        }
    }
}

// The network's first convolution, direct: 3 input channels read from the NCHW graph input,
// a 3x3 window, channels-last output with bias and activation applied. One thread per output
// pixel reads its 27 input values once into registers, then writes each group of VEC output
// channels as one 16-byte store. This replaces the input transpose and cuDNN's convolution
// for the stem, where cuDNN's channels-last kernels pad the 3 channels to 8.
// w: [m][3][3][3] floats (ONNX order), bias: [m] floats; m % VEC == 0, m * 27 <= STEM_MAXW.
#define STEM_WIN 27
#define STEM_MAXW 2048
extern "C" __global__ void conv_stem_3x3(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                         const float* __restrict__ w,
                                         const float* __restrict__ bias, unsigned n, unsigned h,
                                         unsigned wd, unsigned m, unsigned p, unsigned q,
                                         unsigned sh, unsigned sw, unsigned ph, unsigned pw,
                                         int act, float alpha) {
    __shared__ float ws[STEM_MAXW];
    __shared__ float bs[STEM_MAXW / STEM_WIN];
    for (unsigned i = threadIdx.x; i < m * STEM_WIN; i += blockDim.x) ws[i] = w[i];
    for (unsigned i = threadIdx.x; i < m; i += blockDim.x) bs[i] = bias[i];
    __syncthreads();
    unsigned total = n * p * q;
    unsigned plane = h * wd;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        unsigned b = i / (p * q), r = i - b * (p * q);
        unsigned oy = r / q, ox = r - oy * q;
        int iy0 = (int)(oy * sh) - (int)ph, ix0 = (int)(ox * sw) - (int)pw;
        const elem_t* img = x + (size_t)b * 3 * plane;
        float v[STEM_WIN];
#pragma unroll
        for (int c = 0; c < 3; ++c) {
#pragma unroll
            for (int dy = 0; dy < 3; ++dy) {
                int iy = iy0 + dy;
#pragma unroll
                for (int dx = 0; dx < 3; ++dx) {
                    int ix = ix0 + dx;
                    bool in = iy >= 0 && iy < (int)h && ix >= 0 && ix < (int)wd;
                    v[c * 9 + dy * 3 + dx] =
                        in ? ld(img[(size_t)c * plane + (unsigned)iy * wd + (unsigned)ix]) : 0.0f;
                }
            }
        }
        elem_t* out = y + (size_t)i * m;
        for (unsigned g = 0; g < m; g += VEC) {
            Vec16 d;
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
                const float* wr = ws + (g + j) * STEM_WIN;
                float acc = 0.0f;
#pragma unroll
                for (int t = 0; t < STEM_WIN; ++t) acc = fmaf(wr[t], v[t], acc);
                d.e[j] = st(act_apply(acc + bs[g + j], act, alpha));
            }
            *reinterpret_cast<uint4*>(out + g) = d.u;
        }
    }
}

// A 1x1 convolution with at most 4 output channels on NCHW tensors (YOLO's DFL: 16 -> 1
// channel over [n, 16, 4, anchors]), where cuDNN's kernels are slow for so little work. One
// thread per (image, position) reads its cin values (consecutive positions across the warp)
// and writes its m outputs with bias and activation. w: [m][cin] floats, bias: [m] floats.
extern "C" __global__ void conv1x1_few(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                       const float* __restrict__ w,
                                       const float* __restrict__ bias, unsigned n, unsigned cin,
                                       unsigned hw, unsigned m, int act, float alpha) {
    unsigned total = n * hw;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        unsigned b = i / hw, s = i - b * hw;
        const elem_t* src = x + (size_t)b * cin * hw + s;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (unsigned c = 0; c < cin; ++c) {
            float v = ld(src[(size_t)c * hw]);
#pragma unroll
            for (int o = 0; o < 4; ++o)
                if (o < (int)m) acc[o] = fmaf(__ldg(w + o * cin + c), v, acc[o]);
        }
        elem_t* dst = y + (size_t)b * m * hw + s;
#pragma unroll
        for (int o = 0; o < 4; ++o)
            if (o < (int)m) dst[(size_t)o * hw] = st(act_apply(acc[o] + bias[o], act, alpha));
    }
}

// A 3x3 depthwise convolution (one filter per channel, groups == channels), stride 1, on
// channels-last FP16 tensors (the only layout and precision the channels-last plans use, so
// this kernel is compiled for FP16 only), with bias and activation: cuDNN's grouped kernels
// spend several times the memory traffic's time on these (YOLO11's head and its attention's
// positional convolution). One thread per (image, output row, DW_PX adjacent output pixels,
// group of 8 channels): it keeps its 9 x 8 weights in registers as half pairs, reads the
// DW_PX + 2 input columns of each of the 3 window rows once (each a 16-byte load; the threads
// of a warp read adjacent channel groups) and writes DW_PX 16-byte vectors. The products
// accumulate as packed half pairs (fma.rn.f16x2), from the bias; only the sums are converted to
// float for the activation. It is latency-bound at the head's 80x80 layers (ncu: 24 % of memory
// throughput, 37.5 % occupancy at 78 registers, 19.5 active threads per warp), where cuDNN's
// fused graph stays faster; the build times both per layer and keeps the faster (cuda.rs).
// x: [n, h, wd, c], y: [n, p, q, c], c % 8 == 0; w: [9][c] floats (tap-major), bias: [c].
#ifdef ENGINE_F16
#define DW_PX 4
__device__ __forceinline__ unsigned pack_h2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

extern "C" __global__ void conv_dw3x3_nhwc(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                           const float* __restrict__ w,
                                           const float* __restrict__ bias, unsigned n,
                                           unsigned h, unsigned wd, unsigned c, unsigned p,
                                           unsigned q, unsigned ph, unsigned pw, int act,
                                           float alpha) {
    unsigned groups = c / 8;
    unsigned blocks = (q + DW_PX - 1) / DW_PX;
    unsigned total = n * p * blocks * groups;
    unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        unsigned g = i % groups, rest = i / groups;
        unsigned xb = rest % blocks;
        rest /= blocks;
        unsigned oy = rest % p, b = rest / p;
        unsigned c0 = g * 8, ox0 = xb * DW_PX;
        // 8 channels as 4 half pairs.
        unsigned wr[9][4];
#pragma unroll
        for (int t = 0; t < 9; ++t) {
#pragma unroll
            for (int j = 0; j < 8; j += 4) {
                float4 f = __ldg(reinterpret_cast<const float4*>(w + (size_t)t * c + c0 + j));
                wr[t][j / 2] = pack_h2(f.x, f.y);
                wr[t][j / 2 + 1] = pack_h2(f.z, f.w);
            }
        }
        unsigned acc[DW_PX][4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            unsigned bj = pack_h2(bias[c0 + 2 * j], bias[c0 + 2 * j + 1]);
#pragma unroll
            for (int o = 0; o < DW_PX; ++o) acc[o][j] = bj;
        }
        int ix0 = (int)ox0 - (int)pw;
#pragma unroll
        for (int dy = 0; dy < 3; ++dy) {
            int iy = (int)oy - (int)ph + dy;
            if (iy < 0 || iy >= (int)h) continue;
            const elem_t* row = x + ((size_t)b * h + (unsigned)iy) * wd * c + c0;
#pragma unroll
            for (int col = 0; col < DW_PX + 2; ++col) {
                int ix = ix0 + col;
                if (ix < 0 || ix >= (int)wd) continue;
                uint4 v = *reinterpret_cast<const uint4*>(row + (size_t)ix * c);
                unsigned f[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int o = 0; o < DW_PX; ++o) {
                    int dx = col - o;
                    if (dx < 0 || dx > 2) continue;
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        asm("fma.rn.f16x2 %0, %1, %2, %0;"
                            : "+r"(acc[o][j])
                            : "r"(wr[dy * 3 + dx][j]), "r"(f[j]));
                }
            }
        }
        elem_t* out = y + (((size_t)b * p + oy) * q + ox0) * c + c0;
#pragma unroll
        for (int o = 0; o < DW_PX; ++o) {
            if (ox0 + o >= q) break;
            Vec16 d;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                d.e[2 * j] = st(act_apply(ld((elem_t)(acc[o][j] & 0xffffu)), act, alpha));
                d.e[2 * j + 1] = st(act_apply(ld((elem_t)(acc[o][j] >> 16)), act, alpha));
            }
            *reinterpret_cast<uint4*>(out + (size_t)o * c) = d.u;
        }
    }
}
#endif
