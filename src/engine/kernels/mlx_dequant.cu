// MLX affine dequantization on the GPU: w = bf16(bf16(scale * q) + bias), each step rounded
// to BF16 exactly as src/engine/mlx.rs (and MLX) computes it. Explicit _rn intrinsics keep
// the compiler from fusing the multiply and the add into one FMA, which would round once
// instead of twice and change the values.
#include <cuda_bf16.h>
#include <stdint.h>

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
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t n = (size_t)rows * cols;
    if (i >= n) return;
    const size_t r = i / cols;
    const uint32_t c = (uint32_t)(i % cols);
    const size_t words_per_row = (size_t)cols * bits / 32;
    const uint32_t* row = words + r * words_per_row;
    const uint32_t bit = c * bits;
    const uint32_t w = bit / 32, s = bit % 32;
    uint64_t v = (uint64_t)row[w] >> s;
    if (s + bits > 32) v |= (uint64_t)row[w + 1] << (32 - s);
    const uint32_t q = (uint32_t)(v & ((1ull << bits) - 1));
    const size_t g = r * (cols / group_size) + c / group_size;
    const float scale = __bfloat162float(scales[g]);
    const float bias = __bfloat162float(biases[g]);
    const float prod = __bfloat162float(__float2bfloat16_rn(__fmul_rn(scale, (float)q)));
    out[i] = __float2bfloat16_rn(__fadd_rn(prod, bias));
}
