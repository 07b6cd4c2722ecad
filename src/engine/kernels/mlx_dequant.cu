// MLX affine quantization on the GPU, both ways, bit for bit as src/engine/mlx.rs (and MLX)
// computes it. Explicit _rn intrinsics keep the compiler from fusing a multiply and an add
// into one FMA, which would round once instead of twice and change the values.
#include <cuda_bf16.h>
#include <stdint.h>

// w = bf16(bf16(scale * q) + bias), eight consecutive elements of a row per thread (a row
// holds a multiple of 64). Eight codes start on a byte boundary and span at most 64 bits
// from the word they start in, so two words hold them.
extern "C" __global__ void mlx_dequant_bf16(
    const uint32_t* __restrict__ words,
    const __nv_bfloat16* __restrict__ scales,
    const __nv_bfloat16* __restrict__ biases,
    __nv_bfloat16* __restrict__ out,
    uint32_t rows,
    uint32_t cols,
    uint32_t bits,
    uint32_t group_size)
{
    const uint32_t c8 = cols / 8;
    const size_t n8 = (size_t)rows * c8;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const uint32_t words_per_row = cols * bits / 32;
    const uint32_t groups = cols / group_size;
    const uint64_t mask = (1ull << bits) - 1;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += stride) {
        const size_t r = i / c8;
        const uint32_t c = (uint32_t)(i - r * c8) * 8;
        const uint32_t* row = words + r * words_per_row;
        const uint32_t bit = c * bits;
        const uint32_t w = bit / 32, s = bit % 32;
        uint64_t v = row[w];
        if (s + 8 * bits > 32) v |= (uint64_t)row[w + 1] << 32;
        v >>= s;
        const size_t g = r * groups + c / group_size;
        const float scale = __bfloat162float(scales[g]);
        const float bias = __bfloat162float(biases[g]);
        uint4 o;
        __nv_bfloat16* ov = reinterpret_cast<__nv_bfloat16*>(&o);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const uint32_t q = (uint32_t)((v >> (j * bits)) & mask);
            const float prod = __bfloat162float(__float2bfloat16_rn(__fmul_rn(scale, (float)q)));
            ov[j] = __float2bfloat16_rn(__fadd_rn(prod, bias));
        }
        reinterpret_cast<uint4*>(out)[i] = o;
    }
}

// One thread per group of `group_size` consecutive weights of a row (rows are contiguous, so
// group i starts at element i * group_size): the group's min and max in F32, the edge of
// larger magnitude made exactly representable, codes rounded half to even and packed
// least-significant bit first into the group's own words (a group spans whole words).
extern "C" __global__ void mlx_quantize_bf16(
    const __nv_bfloat16* __restrict__ w,
    uint32_t* __restrict__ words,
    __nv_bfloat16* __restrict__ scales,
    __nv_bfloat16* __restrict__ biases,
    size_t n_groups,
    uint32_t bits,
    uint32_t group_size)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const float n_bins = (float)((1u << bits) - 1);
    const uint32_t words_per_group = group_size * bits / 32;
    for (size_t gi = (size_t)blockIdx.x * blockDim.x + threadIdx.x; gi < n_groups; gi += stride) {
        const __nv_bfloat16* v = w + gi * group_size;
        float lo = INFINITY, hi = -INFINITY;
        for (uint32_t j = 0; j < group_size; j++) {
            const float x = __bfloat162float(v[j]);
            lo = fminf(lo, x);
            hi = fmaxf(hi, x);
        }
        const bool low_edge = fabsf(lo) > fabsf(hi);
        float scale = fmaxf(__fdiv_rn(__fsub_rn(hi, lo), n_bins), 1e-7f);
        if (!low_edge) scale = -scale;
        const float edge = low_edge ? lo : hi;
        const float q0 = rintf(__fdiv_rn(edge, scale));
        float bias = 0.0f;
        if (q0 != 0.0f) {
            scale = __fdiv_rn(edge, q0);
            bias = edge;
        }
        uint32_t* out = words + gi * words_per_group;
        uint64_t acc = 0;
        uint32_t filled = 0, next = 0;
        for (uint32_t j = 0; j < group_size; j++) {
            const float x = __bfloat162float(v[j]);
            float q = rintf(__fdiv_rn(__fsub_rn(x, bias), scale));
            q = fminf(fmaxf(q, 0.0f), n_bins);  // NaN becomes 0, as Rust's clamp then cast
            acc |= (uint64_t)(uint32_t)q << filled;
            filled += bits;
            if (filled >= 32) {
                out[next++] = (uint32_t)acc;
                acc >>= 32;
                filled -= 32;
            }
        }
        scales[gi] = __float2bfloat16_rn(scale);
        biases[gi] = __float2bfloat16_rn(bias);
    }
}
