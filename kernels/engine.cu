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

// y[n, c, hw] = act(y[n, c, hw] + bias[c]), in place after cuDNN wrote the convolution.
extern "C" __global__ void bias_act(elem_t* y, const float* __restrict__ bias, long long total,
                                    int channels, int hw, int act, float alpha) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < total; i += stride) {
        int c = (int)((i / hw) % channels);
        y[i] = st(act_apply(ld(y[i]) + bias[c], act, alpha));
    }
}

extern "C" __global__ void act(const elem_t* __restrict__ x, elem_t* __restrict__ y, long long n,
                               int act, float alpha) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) y[i] = st(act_apply(ld(x[i]), act, alpha));
}

struct Strides {
    int rank;
    long long shape[MAX_RANK];   // output shape
    long long a[MAX_RANK];       // strides of a over the output dims (0 = broadcast)
    long long b[MAX_RANK];
};

extern "C" __global__ void binary(const elem_t* __restrict__ a, const elem_t* __restrict__ b,
                                  elem_t* __restrict__ y, long long n, int op, Strides s) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        long long rem = i, ia = 0, ib = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            long long c = rem % s.shape[d];
            rem /= s.shape[d];
            ia += c * s.a[d];
            ib += c * s.b[d];
        }
        float va = ld(a[ia]), vb = ld(b[ib]), r;
        switch (op) {
        case BIN_ADD: r = va + vb; break;
        case BIN_SUB: r = va - vb; break;
        case BIN_MUL: r = va * vb; break;
        default: r = va / vb; break;
        }
        y[i] = st(r);
    }
}

// Gather by strides: y[i] = x[sum(coord_d(i) * s.a[d])] over y's shape s.shape
// (Transpose: the permuted input strides).
extern "C" __global__ void permute(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                   long long n, Strides s) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        long long rem = i, ia = 0;
        for (int d = s.rank - 1; d >= 0; --d) {
            long long c = rem % s.shape[d];
            rem /= s.shape[d];
            ia += c * s.a[d];
        }
        y[i] = x[ia];
    }
}

// Copies x viewed as [outer, rows, inner] rows start, start+step, ... into y viewed as
// [outer, y_rows, inner] at row offset y_off: Concat (step 1, offset = earlier inputs) and
// Narrow (offset 0).
extern "C" __global__ void copy_rows(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                     long long outer, long long rows, long long x_rows,
                                     long long y_rows, long long inner, long long start,
                                     long long step, long long y_off) {
    long long n = outer * rows * inner;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        long long k = i % inner;
        long long r = (i / inner) % rows;
        long long o = i / (inner * rows);
        y[(o * y_rows + y_off + r) * inner + k] = x[(o * x_rows + start + r * step) * inner + k];
    }
}

extern "C" __global__ void maxpool2d(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                     long long planes, int h, int w, int oh, int ow, int kh,
                                     int kw, int sh, int sw, int pt, int pl) {
    long long n = planes * oh * ow;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int j = (int)(i % ow);
        int r = (int)((i / ow) % oh);
        long long p = i / ((long long)ow * oh);
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

extern "C" __global__ void upsample_nearest(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                            long long planes, int h, int w, int fh, int fw) {
    int oh = h * fh, ow = w * fw;
    long long n = planes * oh * ow;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int j = (int)(i % ow);
        int r = (int)((i / ow) % oh);
        long long p = i / ((long long)ow * oh);
        y[i] = x[(p * h + r / fh) * w + j / fw];
    }
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
extern "C" __global__ void maxpool2d_nhwc(const elem_t* __restrict__ x, elem_t* __restrict__ y,
                                          long long n_img, int h, int w, int c, int oh, int ow,
                                          int kh, int kw, int sh, int sw, int pt, int pl) {
    long long n = n_img * oh * ow * c;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int ch = (int)(i % c);
        int j = (int)((i / c) % ow);
        int r = (int)((i / ((long long)c * ow)) % oh);
        long long b = i / ((long long)c * ow * oh);
        const elem_t* src = x + b * h * w * c;
        float m = NEG_INF;
        for (int ki = 0; ki < kh; ++ki) {
            int rr = r * sh + ki - pt;
            if (rr < 0 || rr >= h) continue;
            for (int kj = 0; kj < kw; ++kj) {
                int cc = j * sw + kj - pl;
                if (cc < 0 || cc >= w) continue;
                m = fmaxf(m, ld(src[((long long)rr * w + cc) * c + ch]));
            }
        }
        y[i] = st(m);
    }
}

extern "C" __global__ void upsample_nearest_nhwc(const elem_t* __restrict__ x,
                                                 elem_t* __restrict__ y, long long n_img, int h,
                                                 int w, int c, int fh, int fw) {
    int oh = h * fh, ow = w * fw;
    long long n = n_img * oh * ow * c;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        int ch = (int)(i % c);
        int j = (int)((i / c) % ow);
        int r = (int)((i / ((long long)c * ow)) % oh);
        long long b = i / ((long long)c * ow * oh);
        y[i] = x[((b * h + r / fh) * w + j / fw) * c + ch];
    }
}
