// YOLOv8 / YOLO11 post-processing on the GPU: decode + confidence filter + per-frame top-k +
// class-aware greedy NMS + mapping back through the letterbox. Only the detections leave the
// device.
//
// Input: the detector's output, FP32 [B, 4 + C, N] row-major (row r of frame b at
// out[(b * (4 + C) + r) * N]): rows 0..3 = cx, cy, w, h in model-input pixels, rows 4.. =
// class scores.
//
// Semantics (CPU oracle: its-engine decode_yolov8 + a stable sort + truncation to K + nms,
// see crates/its-gpu/src/postprocess.rs `reference`):
//   * per anchor, best class = first class with the highest score (strict >, NaN never wins),
//     candidate when best > score_threshold;
//   * candidates ordered by (score desc, anchor asc); the first K (max_candidates) are kept;
//   * greedy NMS in that order: a candidate is dropped when a kept box (same class when
//     class_aware) has IoU > iou_threshold with it; stop at max_detections;
//   * boxes x1 = cx - w/2 ... mapped to the source frame: (v - pad) / scale clamped to
//     [0, src size].
// All float arithmetic on boxes uses explicit round-to-nearest intrinsics (no FMA
// contraction), so the GPU result is bit-identical to the CPU reference.
//
// Kernel 1 `yolo_decode`: one thread per anchor, grid (N / 256, B). Reads the class rows
// coalesced across the warp; candidates are appended to a per-frame list of 64-bit sort keys
// (score as an order-preserving u32 in the high half, ~anchor in the low half: unique, and
// larger key = earlier in the order) with one warp-aggregated atomic per warp; the best class
// is stored per anchor.
// Kernel 2 `yolo_nms`: one block of 1024 threads per frame. If more than K candidates
// passed, an exact radix select (8 passes of 8 bits over the keys) finds the K-th largest key;
// the <= K keys are sorted in shared memory (bitonic), the boxes of all sorted candidates are
// loaded into (dynamic) shared memory in one parallel pass, then NMS runs in chunks of 32:
// each warp tests one candidate against all kept boxes and against the chunk's earlier
// candidates in parallel (a 32-bit mask), then one thread runs the greedy over the masks.
// `yolo_decode_x4` is the decode for num_anchors % 4 == 0 (16-byte loads, 4 anchors a thread). Output per frame: count + max_detections slots.

#define PP_MAX_FRAMES 64
#define PP_MAX_CANDIDATES 4096
#define PP_MAX_DETECTIONS 512
#define PP_NMS_THREADS 1024

struct FrameGeo {
    float scale;   // letterbox scale (source -> model input)
    float pad_x;
    float pad_y;
    float src_w;
    float src_h;
};

struct GeoBatch {
    FrameGeo f[PP_MAX_FRAMES];
};

__device__ __forceinline__ unsigned int order_bits(float s) {
    unsigned int u = __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float key_score(unsigned long long key) {
    unsigned int o = (unsigned int)(key >> 32);
    unsigned int u = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
    return __uint_as_float(u);
}

__device__ __forceinline__ unsigned int key_anchor(unsigned long long key) {
    return 0xffffffffu - (unsigned int)(key & 0xffffffffull);
}

extern "C" __global__ void yolo_decode(
    const float* __restrict__ out, int num_classes, int num_anchors, float score_threshold,
    unsigned long long* __restrict__ keys, int* __restrict__ best_class,
    unsigned int* __restrict__ counts)
{
    const int b = blockIdx.y;
    const int a = blockIdx.x * blockDim.x + threadIdx.x;
    const bool valid = a < num_anchors;
    float best = __int_as_float(0xff800000);  // -inf
    int bc = 0;
    if (valid) {
        const float* p = out + ((size_t)b * (4 + num_classes) + 4) * num_anchors + a;
        int c = 0;
        // Four independent loads in flight before the compares.
        for (; c + 4 <= num_classes; c += 4) {
            float s0 = __ldg(p + (size_t)c * num_anchors);
            float s1 = __ldg(p + (size_t)(c + 1) * num_anchors);
            float s2 = __ldg(p + (size_t)(c + 2) * num_anchors);
            float s3 = __ldg(p + (size_t)(c + 3) * num_anchors);
            if (s0 > best) { best = s0; bc = c; }
            if (s1 > best) { best = s1; bc = c + 1; }
            if (s2 > best) { best = s2; bc = c + 2; }
            if (s3 > best) { best = s3; bc = c + 3; }
        }
        for (; c < num_classes; ++c) {
            float s = __ldg(p + (size_t)c * num_anchors);
            if (s > best) { best = s; bc = c; }
        }
    }
    const bool pass = valid && best > score_threshold;
    const unsigned int ballot = __ballot_sync(0xffffffffu, pass);
    if (ballot == 0) return;
    const int lane = threadIdx.x & 31;
    const int leader = __ffs(ballot) - 1;
    unsigned int base = 0;
    if (lane == leader) base = atomicAdd(&counts[b], (unsigned int)__popc(ballot));
    base = __shfl_sync(0xffffffffu, base, leader);
    if (pass) {
        const unsigned int rank = __popc(ballot & ((1u << lane) - 1u));
        keys[(size_t)b * num_anchors + base + rank] =
            ((unsigned long long)order_bits(best) << 32) |
            (unsigned long long)(0xffffffffu - (unsigned int)a);
        best_class[(size_t)b * num_anchors + a] = bc;
    }
}

__device__ __forceinline__ void take_best(float s, int c, float& best, int& bc) {
    if (s > best) { best = s; bc = c; }
}

// As yolo_decode, one thread per 4 consecutive anchors with 16-byte loads (num_anchors % 4
// == 0, checked on the host): a quarter of the load instructions for the same bytes.
extern "C" __global__ void yolo_decode_x4(
    const float* __restrict__ out, int num_classes, int num_anchors, float score_threshold,
    unsigned long long* __restrict__ keys, int* __restrict__ best_class,
    unsigned int* __restrict__ counts)
{
    const int b = blockIdx.y;
    const int nq = num_anchors >> 2;
    const int q = blockIdx.x * blockDim.x + threadIdx.x;
    const bool valid = q < nq;
    const float ninf = __int_as_float(0xff800000);
    float b0 = ninf, b1 = ninf, b2 = ninf, b3 = ninf;
    int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    if (valid) {
        const float4* p =
            reinterpret_cast<const float4*>(out + ((size_t)b * (4 + num_classes) + 4) * num_anchors) + q;
        int c = 0;
        for (; c + 4 <= num_classes; c += 4) {
            const float4 v0 = __ldg(p + (size_t)c * nq);
            const float4 v1 = __ldg(p + (size_t)(c + 1) * nq);
            const float4 v2 = __ldg(p + (size_t)(c + 2) * nq);
            const float4 v3 = __ldg(p + (size_t)(c + 3) * nq);
            take_best(v0.x, c, b0, c0); take_best(v0.y, c, b1, c1);
            take_best(v0.z, c, b2, c2); take_best(v0.w, c, b3, c3);
            take_best(v1.x, c + 1, b0, c0); take_best(v1.y, c + 1, b1, c1);
            take_best(v1.z, c + 1, b2, c2); take_best(v1.w, c + 1, b3, c3);
            take_best(v2.x, c + 2, b0, c0); take_best(v2.y, c + 2, b1, c1);
            take_best(v2.z, c + 2, b2, c2); take_best(v2.w, c + 2, b3, c3);
            take_best(v3.x, c + 3, b0, c0); take_best(v3.y, c + 3, b1, c1);
            take_best(v3.z, c + 3, b2, c2); take_best(v3.w, c + 3, b3, c3);
        }
        for (; c < num_classes; ++c) {
            const float4 v = __ldg(p + (size_t)c * nq);
            take_best(v.x, c, b0, c0); take_best(v.y, c, b1, c1);
            take_best(v.z, c, b2, c2); take_best(v.w, c, b3, c3);
        }
    }
    const bool p0 = valid && b0 > score_threshold, p1 = valid && b1 > score_threshold;
    const bool p2 = valid && b2 > score_threshold, p3 = valid && b3 > score_threshold;
    const unsigned int mine = (unsigned int)p0 + p1 + p2 + p3;
    const int lane = threadIdx.x & 31;
    unsigned int incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned int t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    const unsigned int total = __shfl_sync(0xffffffffu, incl, 31);
    if (total == 0) return;
    unsigned int base = 0;
    if (lane == 31) base = atomicAdd(&counts[b], total);
    base = __shfl_sync(0xffffffffu, base, 31);
    unsigned int pos = base + incl - mine;
    unsigned long long* fk = keys + (size_t)b * num_anchors;
    int* fc = best_class + (size_t)b * num_anchors;
    const unsigned int a0 = 4u * (unsigned int)q;
    if (p0) { fk[pos++] = ((unsigned long long)order_bits(b0) << 32) | (0xffffffffu - a0); fc[a0] = c0; }
    if (p1) { fk[pos++] = ((unsigned long long)order_bits(b1) << 32) | (0xffffffffu - (a0 + 1)); fc[a0 + 1] = c1; }
    if (p2) { fk[pos++] = ((unsigned long long)order_bits(b2) << 32) | (0xffffffffu - (a0 + 2)); fc[a0 + 2] = c2; }
    if (p3) { fk[pos++] = ((unsigned long long)order_bits(b3) << 32) | (0xffffffffu - (a0 + 3)); fc[a0 + 3] = c3; }
}

__device__ __forceinline__ float box_area(float x1, float y1, float x2, float y2) {
    return __fmul_rn(fmaxf(__fsub_rn(x2, x1), 0.0f), fmaxf(__fsub_rn(y2, y1), 0.0f));
}

// Same operations, same order as its-engine nms::iou (a = kept box, b = candidate).
__device__ __forceinline__ float iou(float ax1, float ay1, float ax2, float ay2,
                                     float bx1, float by1, float bx2, float by2) {
    float iw = fmaxf(__fsub_rn(fminf(ax2, bx2), fmaxf(ax1, bx1)), 0.0f);
    float ih = fmaxf(__fsub_rn(fminf(ay2, by2), fmaxf(ay1, by1)), 0.0f);
    float inter = __fmul_rn(iw, ih);
    float uni = __fsub_rn(__fadd_rn(box_area(ax1, ay1, ax2, ay2), box_area(bx1, by1, bx2, by2)),
                          inter);
    return uni > 0.0f ? __fdiv_rn(inter, uni) : 0.0f;
}

// Rust's f32::clamp: NaN stays NaN.
__device__ __forceinline__ float clamp_keep_nan(float v, float lo, float hi) {
    if (v < lo) return lo;
    if (v > hi) return hi;
    return v;
}

// dets: per frame, max_detections slots of 6 floats (x1, y1, x2, y2, score, class as bits);
// det_counts: per frame, kept count.
extern "C" __global__ void __launch_bounds__(PP_NMS_THREADS, 1) yolo_nms(
    const float* __restrict__ out, int num_classes, int num_anchors,
    const unsigned long long* __restrict__ keys, const int* __restrict__ best_class,
    const unsigned int* __restrict__ counts, int max_candidates, int max_detections,
    float iou_threshold, int class_aware, const GeoBatch geo,
    unsigned int* __restrict__ det_counts, float* __restrict__ dets)
{
    __shared__ unsigned long long skeys[PP_MAX_CANDIDATES];
    __shared__ float kx1[PP_MAX_DETECTIONS], ky1[PP_MAX_DETECTIONS];
    __shared__ float kx2[PP_MAX_DETECTIONS], ky2[PP_MAX_DETECTIONS];
    __shared__ float kscore[PP_MAX_DETECTIONS];
    __shared__ int kcls[PP_MAX_DETECTIONS];
    __shared__ int csup[32];
    __shared__ unsigned int cmask[32];
    // Dynamic: 6 arrays of max_candidates entries (boxes, scores, classes): 24 * K bytes.
    extern __shared__ float dyn[];
    __shared__ unsigned int hist[256];
    __shared__ unsigned long long s_prefix;
    __shared__ unsigned int s_remaining, s_fill;
    __shared__ int s_kept;

    const int b = blockIdx.x;
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    const unsigned long long* fkeys = keys + (size_t)b * num_anchors;
    const int* fcls = best_class + (size_t)b * num_anchors;
    const float* fout = out + (size_t)b * (4 + num_classes) * num_anchors;
    int n = (int)min(counts[b], (unsigned int)num_anchors);
    const int k_cap = min(max_candidates, PP_MAX_CANDIDATES);
    const int max_det = min(max_detections, PP_MAX_DETECTIONS);

    int m;
    if (n <= k_cap) {
        for (int i = tid; i < n; i += nthreads) skeys[i] = fkeys[i];
        m = n;
    } else {
        // Exact radix select of the k_cap-th largest key (keys are unique).
        if (tid == 0) { s_prefix = 0ull; s_remaining = (unsigned int)k_cap; }
        unsigned long long mask = 0ull;
        for (int shift = 56; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += nthreads) hist[i] = 0u;
            __syncthreads();
            const unsigned long long prefix = s_prefix;
            for (int i = tid; i < n; i += nthreads) {
                unsigned long long k = fkeys[i];
                if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 0xffu], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                unsigned int rem = s_remaining, cum = 0u;
                int d = 255;
                for (; d > 0; --d) {
                    if (cum + hist[d] >= rem) break;
                    cum += hist[d];
                }
                s_remaining = rem - cum;
                s_prefix = prefix | ((unsigned long long)d << shift);
            }
            mask |= 0xffull << shift;
            __syncthreads();
        }
        const unsigned long long kth = s_prefix;
        if (tid == 0) s_fill = 0u;
        __syncthreads();
        for (int i = tid; i < n; i += nthreads) {
            unsigned long long k = fkeys[i];
            if (k >= kth) skeys[atomicAdd(&s_fill, 1u)] = k;
        }
        m = k_cap;
    }
    // Bitonic sort, descending, over the next power of two (padding keys are 0 < any key).
    int p2 = 1;
    while (p2 < m) p2 <<= 1;
    for (int i = m + tid; i < p2; i += nthreads) skeys[i] = 0ull;
    if (tid == 0) s_kept = 0;
    __syncthreads();
    for (int k = 2; k <= p2; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = tid; i < p2; i += nthreads) {
                const int ixj = i ^ j;
                if (ixj > i) {
                    const unsigned long long x = skeys[i], y = skeys[ixj];
                    const bool desc = (i & k) == 0;
                    if (desc ? (x < y) : (x > y)) { skeys[i] = y; skeys[ixj] = x; }
                }
            }
            __syncthreads();
        }
    }

    // Boxes of all m sorted candidates into shared memory at once (one round of global
    // loads for the whole frame instead of one per chunk).
    float* bx1 = dyn;
    float* by1 = bx1 + k_cap;
    float* bx2 = by1 + k_cap;
    float* by2 = bx2 + k_cap;
    float* bsc = by2 + k_cap;
    int* bcl = (int*)(bsc + k_cap);
    for (int i = tid; i < m; i += nthreads) {
        const unsigned long long key = skeys[i];
        const unsigned int a = key_anchor(key);
        const float cx = fout[a];
        const float cy = fout[(size_t)num_anchors + a];
        const float w = fout[2 * (size_t)num_anchors + a];
        const float h = fout[3 * (size_t)num_anchors + a];
        const float hw = __fmul_rn(w, 0.5f), hh = __fmul_rn(h, 0.5f);
        bx1[i] = __fsub_rn(cx, hw);
        by1[i] = __fsub_rn(cy, hh);
        bx2[i] = __fadd_rn(cx, hw);
        by2[i] = __fadd_rn(cy, hh);
        bsc[i] = key_score(key);
        bcl[i] = fcls[a];
    }
    __syncthreads();

    const int warp = tid >> 5;
    const int lane = tid & 31;
    for (int s = 0; s < m; s += 32) {
        const int kept = s_kept;
        if (kept >= max_det) break;
        const int cnt = min(32, m - s);
        // Warp w tests candidate c = s + w against the boxes kept so far, and builds the
        // mask of earlier candidates of this chunk that would suppress it if kept.
        if (warp < cnt) {
            const int c = s + warp;
            bool sup = false;
            const float cx1 = bx1[c], cy1 = by1[c], cx2 = bx2[c], cy2 = by2[c];
            const int ccl = bcl[c];
            for (int j = lane; j < kept && !sup; j += 32) {
                if ((!class_aware || kcls[j] == ccl) &&
                    iou(kx1[j], ky1[j], kx2[j], ky2[j], cx1, cy1, cx2, cy2) > iou_threshold)
                    sup = true;
            }
            sup = __any_sync(0xffffffffu, sup);
            const int e = s + lane;
            const bool hit = lane < warp && (!class_aware || bcl[e] == ccl) &&
                             iou(bx1[e], by1[e], bx2[e], by2[e], cx1, cy1, cx2, cy2) > iou_threshold;
            const unsigned int mask = __ballot_sync(0xffffffffu, hit);
            if (lane == 0) { csup[warp] = sup ? 1 : 0; cmask[warp] = mask; }
        }
        __syncthreads();
        // Warp 0: greedy over the chunk's 32 bits, then the kept boxes are appended in order.
        if (warp == 0) {
            unsigned int keep = 0u;
            int nk = kept;
            if (lane == 0) {
                for (int k = 0; k < cnt; ++k) {
                    if (csup[k] || (cmask[k] & keep)) continue;
                    if (nk >= max_det) break;
                    keep |= 1u << k;
                    ++nk;
                }
                s_kept = nk;
            }
            keep = __shfl_sync(0xffffffffu, keep, 0);
            if ((keep >> lane) & 1u) {
                const int at = kept + __popc(keep & ((1u << lane) - 1u));
                const int c = s + lane;
                kx1[at] = bx1[c]; ky1[at] = by1[c]; kx2[at] = bx2[c]; ky2[at] = by2[c];
                kscore[at] = bsc[c]; kcls[at] = bcl[c];
            }
        }
        __syncthreads();
    }

    const int kept = s_kept;
    const FrameGeo g = geo.f[b];
    float* fd = dets + (size_t)b * max_detections * 6;
    for (int i = tid; i < kept; i += nthreads) {
        fd[i * 6 + 0] = clamp_keep_nan(__fdiv_rn(__fsub_rn(kx1[i], g.pad_x), g.scale), 0.0f, g.src_w);
        fd[i * 6 + 1] = clamp_keep_nan(__fdiv_rn(__fsub_rn(ky1[i], g.pad_y), g.scale), 0.0f, g.src_h);
        fd[i * 6 + 2] = clamp_keep_nan(__fdiv_rn(__fsub_rn(kx2[i], g.pad_x), g.scale), 0.0f, g.src_w);
        fd[i * 6 + 3] = clamp_keep_nan(__fdiv_rn(__fsub_rn(ky2[i], g.pad_y), g.scale), 0.0f, g.src_h);
        fd[i * 6 + 4] = kscore[i];
        fd[i * 6 + 5] = __int_as_float(kcls[i]);
    }
    if (tid == 0) det_counts[b] = (unsigned int)kept;
}

// The detector's FP16 output (bits as u16) widened to f32 for the decode kernels: out[i] =
// float(in[i]) for i < n. One pass over the tensor; the FP16 engine's outputs go through it.
extern "C" __global__ void widen_f16(const unsigned short* __restrict__ in,
                                     float* __restrict__ out, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(in[i]));
        out[i] = f;
    }
}
