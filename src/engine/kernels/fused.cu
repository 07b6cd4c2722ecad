// Elementwise steps of a transformer block in one pass each, for BF16 activations on the GPU:
// the MLP's silu(gate) · up, residual and bias additions, and attention's scaled, masked
// softmax. Each rounds to BF16 where the unfused operations would, and computes in F32 in
// between. Every kernel writes each output element from one thread, without atomics, so a
// result never depends on scheduling.
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float silu_rounded(float g) {
    return __bfloat162float(__float2bfloat16_rn(g / (1.0f + expf(-g))));
}

// out = bf16(bf16(silu(gate)) * up): the two roundings of silu, then the product.
extern "C" __global__ void silu_mul_bf16(
    const bf16* __restrict__ gate, const bf16* __restrict__ up, bf16* __restrict__ out, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t n8 = n / 8;
    const uint4* g4 = reinterpret_cast<const uint4*>(gate);
    const uint4* u4 = reinterpret_cast<const uint4*>(up);
    uint4* o4 = reinterpret_cast<uint4*>(out);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += stride) {
        uint4 g = g4[i], u = u4[i], o;
        const bf16* gv = reinterpret_cast<const bf16*>(&g);
        const bf16* uv = reinterpret_cast<const bf16*>(&u);
        bf16* ov = reinterpret_cast<bf16*>(&o);
#pragma unroll
        for (int j = 0; j < 8; j++)
            ov[j] = __float2bfloat16_rn(silu_rounded(__bfloat162float(gv[j])) * __bfloat162float(uv[j]));
        o4[i] = o;
    }
    for (size_t i = n8 * 8 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __float2bfloat16_rn(silu_rounded(__bfloat162float(gate[i])) * __bfloat162float(up[i]));
}

// The same for the MLP's gate and up side by side in one row of 2·cols (one product for
// both): out[t, j] = bf16(bf16(silu(in[t, j])) * in[t, cols + j]).
extern "C" __global__ void silu_mul_joined_bf16(
    const bf16* __restrict__ in, bf16* __restrict__ out, size_t rows, size_t cols)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    if (cols % 8 == 0) {
        const size_t c8 = cols / 8, n8 = rows * c8;
        const uint4* in4 = reinterpret_cast<const uint4*>(in);
        uint4* o4 = reinterpret_cast<uint4*>(out);
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += stride) {
            const size_t t = i / c8, j = i - t * c8;
            uint4 g = in4[2 * t * c8 + j], u = in4[2 * t * c8 + c8 + j], o;
            const bf16* gv = reinterpret_cast<const bf16*>(&g);
            const bf16* uv = reinterpret_cast<const bf16*>(&u);
            bf16* ov = reinterpret_cast<bf16*>(&o);
#pragma unroll
            for (int k = 0; k < 8; k++)
                ov[k] = __float2bfloat16_rn(silu_rounded(__bfloat162float(gv[k])) * __bfloat162float(uv[k]));
            o4[i] = o;
        }
        return;
    }
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows * cols; i += stride) {
        const size_t t = i / cols, j = i - t * cols;
        out[i] = __float2bfloat16_rn(silu_rounded(__bfloat162float(in[2 * t * cols + j]))
                                     * __bfloat162float(in[2 * t * cols + cols + j]));
    }
}

// out[i] = bf16(a[i] + b[i % cols]): cols = n for two tensors of one shape, the last
// dimension for a bias added to every row.
extern "C" __global__ void add_bf16(
    const bf16* __restrict__ a, const bf16* __restrict__ b, bf16* __restrict__ out,
    size_t n, size_t cols)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    if (cols % 8 == 0) {
        const size_t n8 = n / 8, c8 = cols / 8;
        const uint4* a4 = reinterpret_cast<const uint4*>(a);
        const uint4* b4 = reinterpret_cast<const uint4*>(b);
        uint4* o4 = reinterpret_cast<uint4*>(out);
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += stride) {
            uint4 x = a4[i], y = b4[i % c8], o;
            const bf16* xv = reinterpret_cast<const bf16*>(&x);
            const bf16* yv = reinterpret_cast<const bf16*>(&y);
            bf16* ov = reinterpret_cast<bf16*>(&o);
#pragma unroll
            for (int j = 0; j < 8; j++)
                ov[j] = __float2bfloat16_rn(__bfloat162float(xv[j]) + __bfloat162float(yv[j]));
            o4[i] = o;
        }
        return;
    }
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i % cols]));
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// One row of softmax(scale · att + mask) by one warp, in F32: lane l takes keys l, l + 32,
// ...; with J > 0 the row's values stay in registers (keys ≤ 32 · J), else each pass reads
// the row again. The same sums in the same order either way.
template <int J>
__device__ __forceinline__ void softmax_row(
    const bf16* __restrict__ x, const bf16* __restrict__ m, bf16* __restrict__ y,
    uint32_t keys, uint32_t lane, float scale)
{
    if (J == 0) {
        float mx = -INFINITY;
        for (uint32_t k = lane; k < keys; k += 32) {
            const float v = __bfloat162float(x[k]) * scale + (m ? __bfloat162float(m[k]) : 0.0f);
            mx = fmaxf(mx, v);
        }
        mx = warp_max(mx);
        float sum = 0.0f;
        for (uint32_t k = lane; k < keys; k += 32) {
            const float v = __bfloat162float(x[k]) * scale + (m ? __bfloat162float(m[k]) : 0.0f);
            sum += expf(v - mx);
        }
        const float inv = 1.0f / warp_sum(sum);
        for (uint32_t k = lane; k < keys; k += 32) {
            const float v = __bfloat162float(x[k]) * scale + (m ? __bfloat162float(m[k]) : 0.0f);
            y[k] = __float2bfloat16_rn(expf(v - mx) * inv);
        }
        return;
    }
    float v[J > 0 ? J : 1];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < J; j++) {
        const uint32_t k = lane + 32 * j;
        if (k < keys) {
            v[j] = __bfloat162float(x[k]) * scale + (m ? __bfloat162float(m[k]) : 0.0f);
            mx = fmaxf(mx, v[j]);
        }
    }
    mx = warp_max(mx);
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < J; j++) {
        if (lane + 32 * j < keys) {
            v[j] = expf(v[j] - mx);
            sum += v[j];
        }
    }
    const float inv = 1.0f / warp_sum(sum);
#pragma unroll
    for (int j = 0; j < J; j++) {
        const uint32_t k = lane + 32 * j;
        if (k < keys) y[k] = __float2bfloat16_rn(v[j] * inv);
    }
}

// softmax(scale · att + mask) over the last dimension, one warp per row, in F32.
// att: [batch, rows_per_batch, keys]; row r of batch b is query (r % rows_per_batch) % len.
// mask (when has_mask): additive, [mask_batches, len, keys], mask_batches 1 or batch.
extern "C" __global__ void masked_softmax_bf16(
    const bf16* __restrict__ att, const bf16* __restrict__ mask, bf16* __restrict__ out,
    uint32_t rows, uint32_t keys, uint32_t rows_per_batch, uint32_t len,
    uint32_t has_mask, uint32_t mask_batched, float scale)
{
    const uint32_t warps = blockDim.x / 32;
    const uint32_t row = blockIdx.x * warps + threadIdx.x / 32;
    const uint32_t lane = threadIdx.x % 32;
    if (row >= rows) return;
    const bf16* x = att + (size_t)row * keys;
    bf16* y = out + (size_t)row * keys;
    const bf16* m = nullptr;
    if (has_mask) {
        const uint32_t b = mask_batched ? row / rows_per_batch : 0;
        const uint32_t q = (row % rows_per_batch) % len;
        m = mask + ((size_t)b * len + q) * keys;
    }
    if (keys <= 32 * 8) softmax_row<8>(x, m, y, keys, lane, scale);
    else if (keys <= 32 * 16) softmax_row<16>(x, m, y, keys, lane, scale);
    else softmax_row<0>(x, m, y, keys, lane, scale);
}

// A projection's output as attention reads it, [b, heads, len, d], with its bias added
// (rounded to BF16, as the separate addition does) and, for queries and keys, the rotary
// embedding applied in F32: style 0 none, 1 halves (i, i + d/2), 2 interleaved pairs
// (2i, 2i + 1). cos and sin are [len, d/2], or [b, len, d/2] when cs_batched. The input is
// [b, len, heads · d], or with a row table, the rows' tokens packed one after another:
// table[r] is row r's first token and table[b + r] its length; the positions past a row's
// length are written as zeros (attention masks them). A token's row starts in_stride
// elements after the previous one's (heads · d, or more when the projection is a column
// range of a wider product). One block per (row, position), its threads over the pairs.
extern "C" __global__ void heads_rope_bf16(
    const bf16* __restrict__ in, const bf16* __restrict__ bias,
    const bf16* __restrict__ cos, const bf16* __restrict__ sin, bf16* __restrict__ out,
    const uint32_t* __restrict__ table,
    uint32_t b, uint32_t len, uint32_t heads, uint32_t d, uint32_t in_stride,
    uint32_t has_bias, uint32_t style, uint32_t cs_batched, uint32_t has_table)
{
    const uint32_t half = d / 2;
    const uint32_t r = blockIdx.x / len, t = blockIdx.x - r * len;
    const bool pad = has_table && t >= table[b + r];
    const size_t token = has_table ? (size_t)table[r] + t : (size_t)r * len + t;
    const size_t cs = ((size_t)(cs_batched ? r : 0) * len + t) * half;
    for (uint32_t p = threadIdx.x; p < heads * half; p += blockDim.x) {
        const uint32_t h = p / half, i = p - h * half;
        uint32_t c1, c2;  // the pair's two columns within the head
        if (style == 2) { c1 = 2 * i; c2 = 2 * i + 1; } else { c1 = i; c2 = i + half; }
        const size_t dst = (((size_t)r * heads + h) * len + t) * d;
        if (pad) {
            out[dst + c1] = __float2bfloat16_rn(0.0f);
            out[dst + c2] = __float2bfloat16_rn(0.0f);
            continue;
        }
        const size_t src = token * in_stride + (size_t)h * d;
        float x1 = __bfloat162float(in[src + c1]);
        float x2 = __bfloat162float(in[src + c2]);
        if (has_bias) {
            x1 = __bfloat162float(__float2bfloat16_rn(x1 + __bfloat162float(bias[h * d + c1])));
            x2 = __bfloat162float(__float2bfloat16_rn(x2 + __bfloat162float(bias[h * d + c2])));
        }
        if (style == 0) {
            out[dst + c1] = __float2bfloat16_rn(x1);
            out[dst + c2] = __float2bfloat16_rn(x2);
            continue;
        }
        const float c = __bfloat162float(cos[cs + i]), s = __bfloat162float(sin[cs + i]);
        out[dst + c1] = __float2bfloat16_rn(x1 * c - x2 * s);
        out[dst + c2] = __float2bfloat16_rn(x1 * s + x2 * c);
    }
}

// Attention's output [b, heads, len, d] back to one row per real token, [tokens, heads · d],
// the rows packed as the row table (see heads_rope_bf16) says. One block per (row,
// position); with vec, eight values per load and store (d a multiple of 8, the input 16-byte
// aligned).
extern "C" __global__ void merge_heads_bf16(
    const bf16* __restrict__ in, const uint32_t* __restrict__ table, bf16* __restrict__ out,
    uint32_t b, uint32_t len, uint32_t heads, uint32_t d, uint32_t vec)
{
    const uint32_t r = blockIdx.x / len, t = blockIdx.x - r * len;
    if (t >= table[b + r]) return;
    bf16* dst = out + ((size_t)table[r] + t) * heads * d;
    if (vec) {
        const uint32_t d8 = d / 8;
        for (uint32_t e = threadIdx.x; e < heads * d8; e += blockDim.x) {
            const uint32_t h = e / d8, c = e - h * d8;
            const size_t src = (((size_t)r * heads + h) * len + t) * d + 8 * c;
            *reinterpret_cast<uint4*>(dst + (size_t)h * d + 8 * c) =
                *reinterpret_cast<const uint4*>(in + src);
        }
        return;
    }
    for (uint32_t e = threadIdx.x; e < heads * d; e += blockDim.x) {
        const uint32_t h = e / d, c = e - h * d;
        dst[e] = in[(((size_t)r * heads + h) * len + t) * d + c];
    }
}

// RMS norm of each row times `alpha`, in exactly the arithmetic of candle's `rmsnorm`
// kernel (reduce.cu), which runs one block of 1024 threads per row when cols ≥ 1024 (else
// one warp): thread k sums the squares of columns k, k + 1024, ... in order, each warp
// sums its threads by butterfly, then one warp sums the warps' sums the same way. Here one
// warp does a row's work, lane l standing in for thread 32·w + l of each of the 32 warps w,
// so the sums and their order, and so the bits, are the same, with a warp's worth of
// threads per row instead of a block's. With staged (cols a multiple of 8, 16-byte aligned
// rows), each warp first copies its row into shared memory (cols BF16 values per warp) in
// 16-byte loads, and the output is written eight values at a time.
extern "C" __global__ void rmsnorm_bf16(
    const bf16* __restrict__ x, const bf16* __restrict__ alpha, bf16* __restrict__ dst,
    uint32_t rows, uint32_t cols, float eps, uint32_t staged)
{
    extern __shared__ uint4 stage[];
    const uint32_t warps = blockDim.x / 32;
    const uint32_t warp = threadIdx.x / 32;
    const uint32_t row = blockIdx.x * warps + warp;
    const uint32_t lane = threadIdx.x % 32;
    if (row >= rows) return;
    const bf16* xr = x + (size_t)row * cols;
    if (staged) {
        uint4* s4 = stage + (size_t)warp * (cols / 8);
        const uint4* x4 = reinterpret_cast<const uint4*>(xr);
        for (uint32_t e = lane; e < cols / 8; e += 32) s4[e] = x4[e];
        __syncwarp();
        xr = reinterpret_cast<const bf16*>(s4);
    }
    float tmp;
    if (cols < 1024) {
        float s = 0.0f;
        for (uint32_t col = lane; col < cols; col += 32) {
            const float xi = __bfloat162float(xr[col]);
            s += xi * xi;
        }
        tmp = warp_sum(s);
    } else {
        float part[32];
#pragma unroll
        for (int w = 0; w < 32; w++) part[w] = 0.0f;
        for (uint32_t base = 0; base < cols; base += 1024) {
#pragma unroll
            for (int w = 0; w < 32; w++) {
                const uint32_t col = base + 32 * w + lane;
                if (col < cols) {
                    const float xi = __bfloat162float(xr[col]);
                    part[w] += xi * xi;
                }
            }
        }
        float mine = 0.0f;
#pragma unroll
        for (int w = 0; w < 32; w++) {
            const float s = warp_sum(part[w]);
            if (lane == (uint32_t)w) mine = s;
        }
        tmp = warp_sum(mine);
    }
    const float mean = tmp / cols;
    const float scale = rsqrtf(mean + eps);
    bf16* yr = dst + (size_t)row * cols;
    if (staged) {
        const uint4* s4 = reinterpret_cast<const uint4*>(xr);
        const uint4* a4 = reinterpret_cast<const uint4*>(alpha);
        uint4* y4 = reinterpret_cast<uint4*>(yr);
        for (uint32_t e = lane; e < cols / 8; e += 32) {
            uint4 xv = s4[e], av = a4[e], o;
            const bf16* xs = reinterpret_cast<const bf16*>(&xv);
            const bf16* as = reinterpret_cast<const bf16*>(&av);
            bf16* os = reinterpret_cast<bf16*>(&o);
#pragma unroll
            for (int k = 0; k < 8; k++)
                os[k] = __float2bfloat16_rn(scale * __bfloat162float(xs[k]) * __bfloat162float(as[k]));
            y4[e] = o;
        }
        return;
    }
    for (uint32_t col = lane; col < cols; col += 32)
        yr[col] = __float2bfloat16_rn(scale * __bfloat162float(xr[col]) * __bfloat162float(alpha[col]));
}

// One part of a key-value cache layer copied into the layer as attention reads it: part
// `src` [src_rows, heads, cols, d] goes to columns at .. at + cols of `out` [b, heads, keys,
// d]; out row r takes src row map[r] (has_map), row 0 (src_rows 1, a part shared by every
// row), else row r. One block per (row, head); with vec, eight values per load and store.
extern "C" __global__ void gather_columns_bf16(
    const bf16* __restrict__ src, const uint32_t* __restrict__ map, bf16* __restrict__ out,
    uint32_t heads, uint32_t cols, uint32_t d, uint32_t keys, uint32_t at,
    uint32_t has_map, uint32_t shared, uint32_t vec)
{
    const uint32_t r = blockIdx.x / heads, h = blockIdx.x - r * heads;
    const uint32_t sr = has_map ? map[r] : (shared ? 0 : r);
    const bf16* from = src + ((size_t)sr * heads + h) * cols * d;
    bf16* to = out + (((size_t)r * heads + h) * keys + at) * d;
    const uint32_t n = cols * d;
    if (vec) {
        const uint4* f4 = reinterpret_cast<const uint4*>(from);
        uint4* t4 = reinterpret_cast<uint4*>(to);
        for (uint32_t e = threadIdx.x; e < n / 8; e += blockDim.x) t4[e] = f4[e];
        return;
    }
    for (uint32_t e = threadIdx.x; e < n; e += blockDim.x) to[e] = from[e];
}

// The additive attention mask of rows with cached columns of their own, [b, len, cols +
// len]: query i of row r sees cached column j where real[r, j] is set, and new column j
// (after the cached ones) where j ≤ i; 0 where seen, -∞ where not.
extern "C" __global__ void ragged_mask_bf16(
    const uint8_t* __restrict__ real, bf16* __restrict__ out,
    uint32_t b, uint32_t cols, uint32_t len)
{
    const uint32_t keys = cols + len;
    const size_t n = (size_t)b * len * keys;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const uint32_t j = e % keys;
        const size_t ri = e / keys;
        const uint32_t i = ri % len;
        const size_t r = ri / len;
        const bool seen = j < cols ? real[r * cols + j] != 0 : j - cols <= i;
        out[e] = __float2bfloat16_rn(seen ? 0.0f : -INFINITY);
    }
}
