// Frame quality over a sample grid: brightness, contrast, sharpness and a combined 0..1
// score, for a batch of RGB u8 HWC frames of mixed sizes (the same device buffer and frame
// table layout the letterbox kernel reads).
//
// Semantics (CPU oracle: crates/its-gpu/src/quality.rs `reference`):
//   nx = min(w, QS_GRID), ny = min(h, QS_GRID); sample (x_i, y_j) = (i*w/nx, j*h/ny)
//   (integer division), i < nx, j < ny
//   L(x, y) = (0.299 R + 0.587 G + 0.114 B) / 255
//   gx = L(min(x+1, w-1), y) - L(x, y);  gy = L(x, min(y+1, h-1)) - L(x, y)
//   brightness = mean L; contrast = sqrt(max(0, mean L^2 - brightness^2));
//   sharpness = sqrt(mean (gx^2 + gy^2))
// The score is computed on the host from these three (QualityReport::score), so the
// thresholds stay in one place.
//
// One block of QS_THREADS per frame; per-thread sums in double, block reduction in shared
// memory (deterministic order), thread 0 writes 3 floats per frame.

#define QS_MAX_FRAMES 64
#define QS_GRID 128
#define QS_THREADS 256

struct QFrame {
    unsigned long long offset;
    int width;
    int height;
    int pitch;
    int pad;
};

struct QBatch {
    QFrame f[QS_MAX_FRAMES];
};

__device__ __forceinline__ float luma(const unsigned char* p) {
    return (0.299f * (float)p[0] + 0.587f * (float)p[1] + 0.114f * (float)p[2]) * (1.0f / 255.0f);
}

extern "C" __global__ void __launch_bounds__(QS_THREADS) frame_quality(
    const unsigned char* __restrict__ src, const QBatch batch, float* __restrict__ out)
{
    __shared__ double s_l[QS_THREADS], s_l2[QS_THREADS], s_g[QS_THREADS];
    const QFrame f = batch.f[blockIdx.x];
    const unsigned char* img = src + f.offset;
    const int nx = min(f.width, QS_GRID), ny = min(f.height, QS_GRID);
    const int total = nx * ny;
    double sl = 0.0, sl2 = 0.0, sg = 0.0;
    for (int s = threadIdx.x; s < total; s += QS_THREADS) {
        const int i = s % nx, j = s / nx;
        const int x = (int)((long long)i * f.width / nx);
        const int y = (int)((long long)j * f.height / ny);
        const int x1 = min(x + 1, f.width - 1), y1 = min(y + 1, f.height - 1);
        const unsigned char* row = img + (size_t)y * f.pitch;
        const float l = luma(row + 3 * x);
        const float gx = luma(row + 3 * x1) - l;
        const float gy = luma(img + (size_t)y1 * f.pitch + 3 * x) - l;
        sl += l;
        sl2 += (double)l * l;
        sg += (double)gx * gx + (double)gy * gy;
    }
    s_l[threadIdx.x] = sl;
    s_l2[threadIdx.x] = sl2;
    s_g[threadIdx.x] = sg;
    __syncthreads();
    for (int h = QS_THREADS / 2; h > 0; h >>= 1) {
        if (threadIdx.x < h) {
            s_l[threadIdx.x] += s_l[threadIdx.x + h];
            s_l2[threadIdx.x] += s_l2[threadIdx.x + h];
            s_g[threadIdx.x] += s_g[threadIdx.x + h];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const double n = (double)total;
        const double mean = s_l[0] / n;
        const double var = s_l2[0] / n - mean * mean;
        out[3 * blockIdx.x + 0] = (float)mean;
        out[3 * blockIdx.x + 1] = (float)sqrt(var > 0.0 ? var : 0.0);
        out[3 * blockIdx.x + 2] = (float)sqrt(s_g[0] / n);
    }
}
