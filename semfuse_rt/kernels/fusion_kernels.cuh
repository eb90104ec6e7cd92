// Per-element logic of the fusion kernels, shared by three compilers.
//
// nvcc and NVRTC compile it for the GPU (fusion_kernels.cu's __global__ kernels call these
// functions); g++ compiles the very same functions into a host library so CI can check the
// logic against numpy without a GPU. Hence: no headers under CUDA (NVRTC has none), no
// cuda_fp16.h (fp16 travels as raw IEEE binary16 bits), and every loop that a GPU thread
// runs is written as "start at `first`, step by `stride`" so the host build can replay it
// for any number of emulated threads.
#pragma once

#if defined(__CUDACC__)
#define SF_HD __host__ __device__ __forceinline__
#define SF_UNROLL _Pragma("unroll")
#else
#include <cmath>
#define SF_HD inline
#define SF_UNROLL
#endif

// Inputs travel as a fixed array of pointers passed by value, so K separate buffers (one per
// input image, as ONNX Runtime or TensorRT hand them out) need no stacking copy.
#define SEMFUSE_MAX_INPUTS 8
// Majority-filter blocks: one thread per pixel of a TILE_W x TILE_H tile.
#define SEMFUSE_TILE_W 32
#define SEMFUSE_TILE_H 8
// Largest window whose tile plus halo fits the 48 KiB of shared memory any GPU grants.
#define SEMFUSE_MAX_WINDOW 63

namespace semfuse {

typedef long long i64;
typedef unsigned short half_bits;  // IEEE binary16, as torch/ORT/TensorRT store fp16

struct Inputs {
  const void* p[SEMFUSE_MAX_INPUTS];
};

struct Weights {
  const float* p[SEMFUSE_MAX_INPUTS];
};

// ---------------------------------------------------------------------------------------
// Scalars and conversions

SF_HD float bits_to_float(unsigned bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  union {
    unsigned u;
    float f;
  } pun;
  pun.u = bits;
  return pun.f;
#endif
}

SF_HD float negative_infinity() { return bits_to_float(0xff800000u); }

// binary16 -> binary32 is exact, so the GPU's cvt instruction and this bit-level version
// give identical floats for every input (the host tests check all 65536 of them).
SF_HD float half_to_float(half_bits h) {
#if defined(__CUDA_ARCH__)
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
#else
  const unsigned sign = static_cast<unsigned>(h & 0x8000u) << 16;
  unsigned exponent = (h >> 10) & 0x1fu;
  unsigned mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) {  // inf and NaN keep their payload
    return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);
    // Subnormal half: shift the leading one into the implicit-bit position.
    unsigned float_exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --float_exponent;
    }
    return bits_to_float(sign | (float_exponent << 23) | ((mantissa & 0x3ffu) << 13));
  }
  return bits_to_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
#endif
}

SF_HD float to_float(float x) { return x; }
SF_HD float to_float(half_bits h) { return half_to_float(h); }

SF_HD float square_root(float x) {
#if defined(__CUDACC__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

SF_HD double square_root(double x) {
#if defined(__CUDACC__)
  return sqrt(x);
#else
  return std::sqrt(x);
#endif
}

SF_HD double power(double base, double exponent) {
#if defined(__CUDACC__)
  return pow(base, exponent);
#else
  return std::pow(base, exponent);
#endif
}

SF_HD bool is_aligned_16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// 16-byte packs: one vector load or store per input per thread, which is what memory-bound
// kernels need to approach copy bandwidth (2-byte fp16 loads alone do not).
template <typename T, int N>
struct alignas(16) Pack {
  T v[N];
};

template <typename T>
struct PackWidth {
  static constexpr int value = 16 / static_cast<int>(sizeof(T));
};

template <typename T, int N>
SF_HD Pack<T, N> load_pack(const void* base, i64 i) {
  return *reinterpret_cast<const Pack<T, N>*>(static_cast<const T*>(base) + i);
}

template <typename T, int N>
SF_HD void store_pack(T* base, i64 i, const Pack<T, N>& pack) {
  *reinterpret_cast<Pack<T, N>*>(base + i) = pack;
}

template <typename T>
SF_HD T load_one(const void* base, i64 i) {
  return static_cast<const T*>(base)[i];
}

// ---------------------------------------------------------------------------------------
// Choose-max (method 1) and CAM-weighted choose-max (method 3)

// A NaN key ranks as -inf: a NaN coefficient never beats a number, so one corrupt input
// cannot poison the fused map; if every key is NaN the lowest k wins like any other tie.
SF_HD float rank_key(float key) { return key != key ? negative_infinity() : key; }

SF_HD float magnitude(float x) { return x < 0.0f ? -x : x; }

SF_HD float choose_max_key(float value) { return rank_key(magnitude(value)); }

// The product is formed before the NaN test so that 0 * inf (NaN) ranks as -inf too.
SF_HD float cam_key(float weight, float value) { return rank_key(weight * magnitude(value)); }

// Strictly greater: on equal keys the input seen first (the lowest k) keeps the element.
template <typename T>
SF_HD void keep_larger(float key, T value, int k, float& best_key, T& best_value,
                       int& best_label) {
  if (key > best_key) {
    best_key = key;
    best_value = value;
    best_label = k;
  }
}

SF_HD bool outputs_and_inputs_aligned(const Inputs& in, int K, const void* fused,
                                      const void* labels) {
  bool aligned = is_aligned_16(fused) && is_aligned_16(labels);
  for (int k = 0; k < K; ++k) aligned = aligned && is_aligned_16(in.p[k]);
  return aligned;
}

template <typename T>
SF_HD void choose_max_one(const Inputs& in, int K, i64 i, T* fused, int* labels) {
  T best = load_one<T>(in.p[0], i);
  float best_key = choose_max_key(to_float(best));
  int label = 0;
  for (int k = 1; k < K; ++k) {
    const T value = load_one<T>(in.p[k], i);
    keep_larger(choose_max_key(to_float(value)), value, k, best_key, best, label);
  }
  fused[i] = best;
  labels[i] = label;
}

template <typename T>
SF_HD void choose_max_pack(const Inputs& in, int K, i64 i, T* fused, int* labels) {
  constexpr int N = PackWidth<T>::value;
  Pack<T, N> best = load_pack<T, N>(in.p[0], i);
  Pack<int, N> label;
  float best_key[N];
  SF_UNROLL for (int e = 0; e < N; ++e) {
    best_key[e] = choose_max_key(to_float(best.v[e]));
    label.v[e] = 0;
  }
  for (int k = 1; k < K; ++k) {
    const Pack<T, N> value = load_pack<T, N>(in.p[k], i);
    SF_UNROLL for (int e = 0; e < N; ++e) {
      keep_larger(choose_max_key(to_float(value.v[e])), value.v[e], k, best_key[e], best.v[e],
                  label.v[e]);
    }
  }
  store_pack(fused, i, best);
  store_pack(labels, i, label);
}

// Elements [0, count) of K same-shaped tensors; any layout, the rule is elementwise.
template <typename T>
SF_HD void choose_max_strided(const Inputs& in, int K, i64 count, T* fused, int* labels,
                              i64 first, i64 stride) {
  constexpr int N = PackWidth<T>::value;
  i64 packed = 0;
  if (outputs_and_inputs_aligned(in, K, fused, labels)) {
    const i64 packs = count / N;
    for (i64 j = first; j < packs; j += stride) choose_max_pack<T>(in, K, j * N, fused, labels);
    packed = packs * N;
  }
  for (i64 i = packed + first; i < count; i += stride) choose_max_one<T>(in, K, i, fused, labels);
}

// Features are NCHW with `plane` = H * W; weights are N x H x W per input, shared by the C
// channels. Element i sits in plane q = i / plane (q = n * C + c) at pixel i - q * plane.
SF_HD i64 cam_weight_index(i64 i, int C, i64 plane) {
  const i64 q = i / plane;
  return (q / C) * plane + (i - q * plane);
}

template <typename T>
SF_HD void cam_choose_max_one(const Inputs& in, const Weights& w, int K, int C, i64 plane, i64 i,
                              T* fused, int* labels) {
  const i64 wi = cam_weight_index(i, C, plane);
  T best = load_one<T>(in.p[0], i);
  float best_key = cam_key(w.p[0][wi], to_float(best));
  int label = 0;
  for (int k = 1; k < K; ++k) {
    const T value = load_one<T>(in.p[k], i);
    keep_larger(cam_key(w.p[k][wi], to_float(value)), value, k, best_key, best, label);
  }
  fused[i] = best;
  labels[i] = label;
}

// Only used when a pack cannot straddle two planes (plane % N == 0), so its N weights are
// consecutive.
template <typename T>
SF_HD void cam_choose_max_pack(const Inputs& in, const Weights& w, int K, int C, i64 plane, i64 i,
                               T* fused, int* labels) {
  constexpr int N = PackWidth<T>::value;
  const i64 wi = cam_weight_index(i, C, plane);
  Pack<T, N> best = load_pack<T, N>(in.p[0], i);
  Pack<int, N> label;
  float best_key[N];
  SF_UNROLL for (int e = 0; e < N; ++e) {
    best_key[e] = cam_key(w.p[0][wi + e], to_float(best.v[e]));
    label.v[e] = 0;
  }
  for (int k = 1; k < K; ++k) {
    const Pack<T, N> value = load_pack<T, N>(in.p[k], i);
    SF_UNROLL for (int e = 0; e < N; ++e) {
      keep_larger(cam_key(w.p[k][wi + e], to_float(value.v[e])), value.v[e], k, best_key[e],
                  best.v[e], label.v[e]);
    }
  }
  store_pack(fused, i, best);
  store_pack(labels, i, label);
}

template <typename T>
SF_HD void cam_choose_max_strided(const Inputs& in, const Weights& w, int K, int C, i64 plane,
                                  i64 count, T* fused, int* labels, i64 first, i64 stride) {
  constexpr int N = PackWidth<T>::value;
  i64 packed = 0;
  if (plane % N == 0 && outputs_and_inputs_aligned(in, K, fused, labels)) {
    const i64 packs = count / N;
    for (i64 j = first; j < packs; j += stride) {
      cam_choose_max_pack<T>(in, w, K, C, plane, j * N, fused, labels);
    }
    packed = packs * N;
  }
  for (i64 i = packed + first; i < count; i += stride) {
    cam_choose_max_one<T>(in, w, K, C, plane, i, fused, labels);
  }
}

// ---------------------------------------------------------------------------------------
// Majority filter
//
// A block owns a TILE_W x TILE_H tile of one plane (one channel of one image) and first
// copies the tile plus a `radius` halo into shared memory, so each label is read from
// global memory about once instead of window^2 times.

SF_HD int tile_pitch(int radius) { return SEMFUSE_TILE_W + 2 * radius; }
SF_HD int tile_rows(int radius) { return SEMFUSE_TILE_H + 2 * radius; }

// Cooperative copy: thread `tid` of `threads` copies every threads-th cell. Cells outside
// the image get -1, a label that never votes.
SF_HD void majority_load_tile(const int* plane, int H, int W, int origin_y, int origin_x,
                              int radius, int* tile, int tid, int threads) {
  const int pitch = tile_pitch(radius);
  const int cells = pitch * tile_rows(radius);
  for (int c = tid; c < cells; c += threads) {
    const int ty = c / pitch;
    const int tx = c - ty * pitch;
    const int gy = origin_y - radius + ty;
    const int gx = origin_x - radius + tx;
    const bool inside = gy >= 0 && gy < H && gx >= 0 && gx < W;
    tile[c] = inside ? plane[static_cast<i64>(gy) * W + gx] : -1;
  }
}

// Rows [y0, y1) x columns [x0, x1) of `labels` vote. Labels outside 0..K-1 do not vote (this
// also keeps a corrupt label from indexing past `counts`). Most votes wins; a tie keeps the
// centre label if it is tied, else the lowest tied label.
SF_HD int majority_vote(const int* labels, int pitch, int y0, int y1, int x0, int x1, int centre,
                        int K) {
  int counts[SEMFUSE_MAX_INPUTS];
  for (int k = 0; k < K; ++k) counts[k] = 0;
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) {
      const int label = labels[y * pitch + x];
      if (static_cast<unsigned>(label) < static_cast<unsigned>(K)) ++counts[label];
    }
  }
  int top = 0;
  for (int k = 0; k < K; ++k) top = counts[k] > top ? counts[k] : top;
  if (static_cast<unsigned>(centre) < static_cast<unsigned>(K) && counts[centre] == top) {
    return centre;
  }
  for (int k = 0; k < K; ++k) {
    if (counts[k] == top) return k;
  }
  return 0;  // unreachable: some label holds the top count
}

// The filtered label of image pixel (origin_y + ty, origin_x + tx), which must lie inside the
// image, read from a tile loaded by majority_load_tile. The window is clipped to the image,
// then moved into tile coordinates.
SF_HD int majority_tile_pixel(const int* tile, int H, int W, int origin_y, int origin_x,
                              int radius, int ty, int tx, int K) {
  const int gy = origin_y + ty;
  const int gx = origin_x + tx;
  const int y0 = gy - radius > 0 ? gy - radius : 0;
  const int y1 = gy + radius + 1 < H ? gy + radius + 1 : H;
  const int x0 = gx - radius > 0 ? gx - radius : 0;
  const int x1 = gx + radius + 1 < W ? gx + radius + 1 : W;
  const int to_tile_y = radius - origin_y;
  const int to_tile_x = radius - origin_x;
  const int pitch = tile_pitch(radius);
  const int centre = tile[(ty + radius) * pitch + tx + radius];
  return majority_vote(tile, pitch, y0 + to_tile_y, y1 + to_tile_y, x0 + to_tile_x,
                       x1 + to_tile_x, centre, K);
}

// ---------------------------------------------------------------------------------------
// Adam on the image (fp32 x, gradient, m, v)

// The per-step scalars, formed in double exactly as torch.optim.Adam forms them from Python
// floats, then rounded to float as torch's fp32 kernels round their scalar arguments.
struct AdamScalars {
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float neg_step_size;          // -lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
};

SF_HD AdamScalars adam_scalars(i64 t, double lr, double beta1, double beta2, double eps) {
  const double bias_correction1 = 1.0 - power(beta1, static_cast<double>(t));
  const double bias_correction2 = 1.0 - power(beta2, static_cast<double>(t));
  AdamScalars s;
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.eps = static_cast<float>(eps);
  s.neg_step_size = static_cast<float>(-(lr / bias_correction1));
  s.bias_correction2_sqrt = static_cast<float>(square_root(bias_correction2));
  return s;
}

// m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, x -= lr m_hat / (sqrt(v_hat) + eps), written
// in torch.optim.Adam's operation order (lerp_, mul_().addcmul_(), sqrt / bc2_sqrt + eps,
// addcdiv_) so the roundings match torch's wherever neither side fuses a multiply-add.
SF_HD void adam_element(float& x, float g, float& m, float& v, const AdamScalars& s) {
  m = m + s.one_minus_beta1 * (g - m);
  v = v * s.beta2 + (s.one_minus_beta2 * g) * g;
  const float denominator = square_root(v) / s.bias_correction2_sqrt + s.eps;
  x = x + (s.neg_step_size * m) / denominator;
}

SF_HD void adam_strided(float* x, const float* g, float* m, float* v, i64 count,
                        const AdamScalars& s, i64 first, i64 stride) {
  constexpr int N = PackWidth<float>::value;
  i64 packed = 0;
  if (is_aligned_16(x) && is_aligned_16(g) && is_aligned_16(m) && is_aligned_16(v)) {
    const i64 packs = count / N;
    for (i64 j = first; j < packs; j += stride) {
      const i64 i = j * N;
      Pack<float, N> xp = load_pack<float, N>(x, i);
      const Pack<float, N> gp = load_pack<float, N>(g, i);
      Pack<float, N> mp = load_pack<float, N>(m, i);
      Pack<float, N> vp = load_pack<float, N>(v, i);
      SF_UNROLL for (int e = 0; e < N; ++e) adam_element(xp.v[e], gp.v[e], mp.v[e], vp.v[e], s);
      store_pack(x, i, xp);
      store_pack(m, i, mp);
      store_pack(v, i, vp);
    }
    packed = packs * N;
  }
  for (i64 i = packed + first; i < count; i += stride) adam_element(x[i], g[i], m[i], v[i], s);
}

}  // namespace semfuse
