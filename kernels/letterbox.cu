// Fused letterbox: a batch of RGB u8 HWC frames of mixed sizes -> NCHW [B,3,TH,TW]
// (FP16 or FP32), aspect-preserving bilinear resize, centred, pad 114/255, scale 0..1.
//
// Semantics (the CPU reference in crates/its-gpu/src/letterbox.rs is the oracle):
//   scale = min(TW/w, TH/h); new_w = round(w*scale); pad_x = (TW-new_w)/2 (same for y)
//   inside the image region: src = (dst - pad + 0.5)/scale - 0.5, clamped to [0, size-1],
//   bilinear over the 4 neighbours, value/255; outside: 114/255.
//
// Layout of work: one thread computes PX consecutive output pixels of one row, all three
// channels, and writes each channel plane with one PX-wide store (PX halves or floats).
// Consecutive threads take consecutive pixel groups, so a warp's byte loads of the source
// stay within a few cache lines (span ~ 32*PX*3/scale bytes): small PX keeps L1 traffic per
// load instruction low, large PX gives wider stores. Variants PX = 1, 2, 4, 8 are compiled
// (`letterbox_px<PX>_<dtype>`); `letterbox_<dtype>` is the default (LB_DEFAULT_PX).
// Grid: x = groups of (TH * TW/PX) threads, y = frame. Per-frame parameters travel in the
// kernel's parameter space (one FrameBatch by value), so a launch needs no host->device copy.
//
// Requirements checked on the host: TW % 8 == 0, the output pointer 16-byte aligned,
// at most LB_MAX_FRAMES frames per launch, every frame's rows inside the input buffer.

#define LB_MAX_FRAMES 64
#ifndef LB_DEFAULT_PX
#define LB_DEFAULT_PX 2
#endif

struct FrameDesc {
    unsigned long long offset;  // byte offset of the frame's first row in the input buffer
    int width;
    int height;
    int pitch;                  // bytes between rows (>= 3*width)
    int new_w;
    int new_h;
    int pad_x;
    int pad_y;
    float inv_scale;            // 1/scale
};

struct FrameBatch {
    FrameDesc f[LB_MAX_FRAMES];
};

__device__ __forceinline__ unsigned int pack_half2(float lo, float hi) {
    unsigned short l, h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(l) : "f"(lo));
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(hi));
    return (unsigned int)l | ((unsigned int)h << 16);
}

template <int PX>
__device__ __forceinline__ void letterbox_pixels(
    const unsigned char* __restrict__ src, const FrameDesc& d, int x0, int y,
    float (&r)[PX], float (&g)[PX], float (&b)[PX])
{
    const float pad = 114.0f / 255.0f;
    const float k = 1.0f / 255.0f;
    const int iy = y - d.pad_y;
    if (iy < 0 || iy >= d.new_h || x0 + PX <= d.pad_x || x0 >= d.pad_x + d.new_w) {
#pragma unroll
        for (int i = 0; i < PX; ++i) { r[i] = pad; g[i] = pad; b[i] = pad; }
        return;
    }
    float sy = ((float)iy + 0.5f) * d.inv_scale - 0.5f;
    sy = fminf(fmaxf(sy, 0.0f), (float)(d.height - 1));
    const int y0 = (int)sy;  // sy >= 0, so truncation is floor
    const int y1 = min(y0 + 1, d.height - 1);
    const float fy = sy - (float)y0;
    const unsigned char* __restrict__ row0 = src + d.offset + (unsigned long long)y0 * d.pitch;
    const unsigned char* __restrict__ row1 = src + d.offset + (unsigned long long)y1 * d.pitch;
    const float wmax = (float)(d.width - 1);

#pragma unroll
    for (int i = 0; i < PX; ++i) {
        const int ix = x0 + i - d.pad_x;
        const bool inside = ix >= 0 && ix < d.new_w;
        float sx = ((float)ix + 0.5f) * d.inv_scale - 0.5f;
        sx = fminf(fmaxf(sx, 0.0f), wmax);  // also keeps loads in bounds when !inside
        const int xa = (int)sx;
        const int xb = min(xa + 1, d.width - 1);
        const float fx = sx - (float)xa;
        const unsigned char* p00 = row0 + 3 * xa;
        const unsigned char* p01 = row0 + 3 * xb;
        const unsigned char* p10 = row1 + 3 * xa;
        const unsigned char* p11 = row1 + 3 * xb;
        float c[3];
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) {
            const float a00 = (float)__ldg(p00 + ch);
            const float a01 = (float)__ldg(p01 + ch);
            const float a10 = (float)__ldg(p10 + ch);
            const float a11 = (float)__ldg(p11 + ch);
            const float top = fmaf(fx, a01 - a00, a00);
            const float bot = fmaf(fx, a11 - a10, a10);
            c[ch] = fmaf(fy, bot - top, top) * k;
        }
        r[i] = inside ? c[0] : pad;
        g[i] = inside ? c[1] : pad;
        b[i] = inside ? c[2] : pad;
    }
}

// PX-wide stores of one channel's PX values.
__device__ __forceinline__ void store_px(unsigned short* o, const float (&v)[1]) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v[0]));
    *o = h;
}
__device__ __forceinline__ void store_px(unsigned short* o, const float (&v)[2]) {
    *reinterpret_cast<unsigned int*>(o) = pack_half2(v[0], v[1]);
}
__device__ __forceinline__ void store_px(unsigned short* o, const float (&v)[4]) {
    *reinterpret_cast<uint2*>(o) = make_uint2(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]));
}
__device__ __forceinline__ void store_px(unsigned short* o, const float (&v)[8]) {
    *reinterpret_cast<uint4*>(o) = make_uint4(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]),
                                              pack_half2(v[4], v[5]), pack_half2(v[6], v[7]));
}
__device__ __forceinline__ void store_px(float* o, const float (&v)[1]) { *o = v[0]; }
__device__ __forceinline__ void store_px(float* o, const float (&v)[2]) {
    *reinterpret_cast<float2*>(o) = make_float2(v[0], v[1]);
}
__device__ __forceinline__ void store_px(float* o, const float (&v)[4]) {
    *reinterpret_cast<float4*>(o) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store_px(float* o, const float (&v)[8]) {
    float4* q = reinterpret_cast<float4*>(o);
    q[0] = make_float4(v[0], v[1], v[2], v[3]);
    q[1] = make_float4(v[4], v[5], v[6], v[7]);
}

template <int PX, typename OutT>
__device__ __forceinline__ void letterbox_body(
    const unsigned char* __restrict__ src, OutT* __restrict__ dst,
    const FrameBatch& batch, int tw, int th)
{
    const int frame = blockIdx.y;
    const int groups_per_row = tw / PX;
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= groups_per_row * th) return;
    const int y = gid / groups_per_row;
    const int x0 = (gid - y * groups_per_row) * PX;
    float r[PX], g[PX], b[PX];
    letterbox_pixels<PX>(src, batch.f[frame], x0, y, r, g, b);
    const unsigned long long plane = (unsigned long long)tw * th;
    OutT* out = dst + (unsigned long long)frame * 3ull * plane + (unsigned long long)y * tw + x0;
    store_px(out, r);
    store_px(out + plane, g);
    store_px(out + 2 * plane, b);
}

#define LB_KERNEL(NAME, PX, OUT_T)                                                   \
    extern "C" __global__ void __launch_bounds__(256) NAME(                         \
        const unsigned char* __restrict__ src, OUT_T* __restrict__ dst,             \
        const FrameBatch batch, int tw, int th)                                     \
    {                                                                               \
        letterbox_body<PX, OUT_T>(src, dst, batch, tw, th);                         \
    }

LB_KERNEL(letterbox_f16, LB_DEFAULT_PX, unsigned short)
LB_KERNEL(letterbox_f32, LB_DEFAULT_PX, float)
LB_KERNEL(letterbox_px1_f16, 1, unsigned short)
LB_KERNEL(letterbox_px1_f32, 1, float)
LB_KERNEL(letterbox_px2_f16, 2, unsigned short)
LB_KERNEL(letterbox_px2_f32, 2, float)
LB_KERNEL(letterbox_px4_f16, 4, unsigned short)
LB_KERNEL(letterbox_px4_f32, 4, float)
LB_KERNEL(letterbox_px8_f16, 8, unsigned short)
LB_KERNEL(letterbox_px8_f32, 8, float)
