// Fusion kernels: __global__ entry points for the GPU (nvcc, NVRTC) and, when compiled by a
// host C++ compiler, extern "C" loops that replay the same per-thread work on the CPU for
// the tests. Everything that decides a value lives in fusion_kernels.cuh.
//
// Entry points are extern "C" so that NVRTC's module exposes them under these exact names.
// The pointer arrays are __grid_constant__: indexed in place in parameter memory instead of
// being copied to per-thread local memory.
#include "fusion_kernels.cuh"
#include "first_layer_gradient.cuh"

#if defined(__CUDACC__)

#define SF_BLOCK 256
#define SF_FIRST (static_cast<semfuse::i64>(blockIdx.x) * blockDim.x + threadIdx.x)
#define SF_STRIDE (static_cast<semfuse::i64>(gridDim.x) * blockDim.x)

extern "C" __global__ void __launch_bounds__(SF_BLOCK)
    semfuse_choose_max_f32(const __grid_constant__ semfuse::Inputs in, int K, long long count,
                           float* fused, int* labels) {
  semfuse::choose_max_strided<float>(in, K, count, fused, labels, SF_FIRST, SF_STRIDE);
}

extern "C" __global__ void __launch_bounds__(SF_BLOCK)
    semfuse_choose_max_f16(const __grid_constant__ semfuse::Inputs in, int K, long long count,
                           semfuse::half_bits* fused, int* labels) {
  semfuse::choose_max_strided<semfuse::half_bits>(in, K, count, fused, labels, SF_FIRST,
                                                  SF_STRIDE);
}

extern "C" __global__ void __launch_bounds__(SF_BLOCK)
    semfuse_cam_choose_max_f32(const __grid_constant__ semfuse::Inputs in,
                               const __grid_constant__ semfuse::Weights w, int K, int C,
                               long long plane, long long count, float* fused, int* labels) {
  semfuse::cam_choose_max_strided<float>(in, w, K, C, plane, count, fused, labels, SF_FIRST,
                                         SF_STRIDE);
}

extern "C" __global__ void __launch_bounds__(SF_BLOCK)
    semfuse_cam_choose_max_f16(const __grid_constant__ semfuse::Inputs in,
                               const __grid_constant__ semfuse::Weights w, int K, int C,
                               long long plane, long long count, semfuse::half_bits* fused,
                               int* labels) {
  semfuse::cam_choose_max_strided<semfuse::half_bits>(in, w, K, C, plane, count, fused, labels,
                                                      SF_FIRST, SF_STRIDE);
}

// Grid: x over tile columns, y over tile rows, z strides over the N*C planes.
// Block: SEMFUSE_TILE_W x SEMFUSE_TILE_H threads. Dynamic shared memory: the tile and halo.
template <typename T, bool kFuse>
__device__ void majority_blocks(const semfuse::Inputs& in, int K, const int* labels_in,
                                long long planes, int H, int W, int radius, int* labels_out,
                                T* fused, int* tile) {
  const int origin_x = blockIdx.x * SEMFUSE_TILE_W;
  const int origin_y = blockIdx.y * SEMFUSE_TILE_H;
  const int tid = threadIdx.y * SEMFUSE_TILE_W + threadIdx.x;
  const int gy = origin_y + threadIdx.y;
  const int gx = origin_x + threadIdx.x;
  const bool inside = gy < H && gx < W;
  const semfuse::i64 plane_size = static_cast<semfuse::i64>(H) * W;
  for (semfuse::i64 p = blockIdx.z; p < planes; p += gridDim.z) {
    semfuse::majority_load_tile(labels_in + p * plane_size, H, W, origin_y, origin_x, radius,
                                tile, tid, SEMFUSE_TILE_W * SEMFUSE_TILE_H);
    __syncthreads();
    if (inside) {
      const int label = semfuse::majority_tile_pixel(tile, H, W, origin_y, origin_x, radius,
                                                     threadIdx.y, threadIdx.x, K);
      const semfuse::i64 i = p * plane_size + static_cast<semfuse::i64>(gy) * W + gx;
      labels_out[i] = label;
      if (kFuse) fused[i] = semfuse::load_one<T>(in.p[label], i);
    }
    __syncthreads();  // the next plane overwrites the tile
  }
}

extern "C" __global__ void __launch_bounds__(SEMFUSE_TILE_W* SEMFUSE_TILE_H)
    semfuse_majority_filter(const int* labels_in, int K, long long planes, int H, int W,
                            int radius, int* labels_out) {
  extern __shared__ int tile[];
  semfuse::Inputs none = {};
  majority_blocks<float, false>(none, K, labels_in, planes, H, W, radius, labels_out, nullptr,
                                tile);
}

extern "C" __global__ void __launch_bounds__(SEMFUSE_TILE_W* SEMFUSE_TILE_H)
    semfuse_majority_fuse_f32(const __grid_constant__ semfuse::Inputs in, int K,
                              const int* labels_in, long long planes, int H, int W, int radius,
                              int* labels_out, float* fused) {
  extern __shared__ int tile[];
  majority_blocks<float, true>(in, K, labels_in, planes, H, W, radius, labels_out, fused, tile);
}

extern "C" __global__ void __launch_bounds__(SEMFUSE_TILE_W* SEMFUSE_TILE_H)
    semfuse_majority_fuse_f16(const __grid_constant__ semfuse::Inputs in, int K,
                              const int* labels_in, long long planes, int H, int W, int radius,
                              int* labels_out, semfuse::half_bits* fused) {
  extern __shared__ int tile[];
  majority_blocks<semfuse::half_bits, true>(in, K, labels_in, planes, H, W, radius, labels_out,
                                            fused, tile);
}

// Scalars computed by the caller (step counter on the host).
extern "C" __global__ void __launch_bounds__(SF_BLOCK)
    semfuse_adam_update(float* x, const float* g, float* m, float* v, long long count,
                        semfuse::AdamScalars s) {
  semfuse::adam_strided(x, g, m, v, count, s, SF_FIRST, SF_STRIDE);
}

// Step counter t in device memory, so a captured CUDA graph replays the whole fixed-step
// loop unchanged: semfuse_adam_advance_step bumps t, then this kernel reads it. One thread
// per block forms the scalars (double pow is slow on GPUs without full-rate fp64).
extern "C" __global__ void __launch_bounds__(SF_BLOCK)
    semfuse_adam_update_device_step(float* x, const float* g, float* m, float* v,
                                    long long count, double lr, double beta1, double beta2,
                                    double eps, const int* step) {
  __shared__ semfuse::AdamScalars shared_scalars;
  if (threadIdx.x == 0) shared_scalars = semfuse::adam_scalars(*step, lr, beta1, beta2, eps);
  __syncthreads();
  const semfuse::AdamScalars s = shared_scalars;
  semfuse::adam_strided(x, g, m, v, count, s, SF_FIRST, SF_STRIDE);
}

extern "C" __global__ void semfuse_adam_advance_step(int* step) {
  if (blockIdx.x == 0 && threadIdx.x == 0) *step += 1;
}

// conv1_1 with the normalisation folded in, set by KernelRunner.set_first_layer_weights.
// Every index into them is known at compile time (the loops below unroll completely).
__constant__ float semfuse_first_layer_weight[SEMFUSE_GRAD_CHANNELS * 27];
__constant__ float semfuse_first_layer_bias[SEMFUSE_GRAD_CHANNELS];

// One chunk of channels; a template so that c0, and with it every constant-memory index, is
// known at compile time.
template <int C0>
__device__ __forceinline__ float first_layer_chunk(semfuse::GradientTile& s, const float* target,
                                                   int H, int W, int oy, int ox, int relu,
                                                   int tid, float acc[3]) {
  using namespace semfuse;
  const float loss = gradient_forward_chunk(s, semfuse_first_layer_weight, semfuse_first_layer_bias,
                                            target, H, W, oy, ox, C0, relu, tid, kGradThreads);
  __syncthreads();
  gradient_backward_chunk(s, semfuse_first_layer_weight, C0, tid, acc);
  __syncthreads();  // the next chunk overwrites the residuals
  return loss;
}

// Grid: x over tile columns, y over tile rows, z over images; kGradThreads threads. Each block
// writes its share of the loss to partials[(n * tiles_y + tile_y) * tiles_x + tile_x].
extern "C" __global__ void __launch_bounds__(semfuse::kGradThreads)
    semfuse_first_layer_gradient(const float* image, const float* target, const float* offset,
                                 int H, int W, int relu, float* grad, float* partials) {
  using namespace semfuse;
  static_assert(kGradChannels == 4 * kGradChunk, "the chunk calls below cover 64 channels");
  __shared__ GradientTile s;
  __shared__ float warp_loss[kGradThreads / 32];
  const i64 plane = static_cast<i64>(H) * W;
  const int n = blockIdx.z;
  const int oy = blockIdx.y * kGradTile;
  const int ox = blockIdx.x * kGradTile;
  const int tid = threadIdx.x;
  gradient_load(s, image + n * 3 * plane, offset, H, W, oy, ox, tid, kGradThreads);
  __syncthreads();
  float acc[3] = {0.f, 0.f, 0.f};
  const float* own_target = target + n * kGradChannels * plane;
  float loss = first_layer_chunk<0>(s, own_target, H, W, oy, ox, relu, tid, acc);
  loss += first_layer_chunk<kGradChunk>(s, own_target, H, W, oy, ox, relu, tid, acc);
  loss += first_layer_chunk<2 * kGradChunk>(s, own_target, H, W, oy, ox, relu, tid, acc);
  loss += first_layer_chunk<3 * kGradChunk>(s, own_target, H, W, oy, ox, relu, tid, acc);
  gradient_store(grad + n * 3 * plane, H, W, oy, ox, tid, acc);
  for (int offset = 16; offset > 0; offset /= 2) loss += __shfl_down_sync(0xffffffffu, loss, offset);
  if ((tid & 31) == 0) warp_loss[tid / 32] = loss;
  __syncthreads();
  if (tid == 0) {
    float total = 0.f;
    for (int i = 0; i < kGradThreads / 32; ++i) total += warp_loss[i];
    partials[(static_cast<i64>(n) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x] = total;
  }
}

// One block of SF_BLOCK threads per image: loss[n] = the sum of its `blocks` partials, in a
// fixed order, so every replay of a captured loop reports the same losses.
extern "C" __global__ void __launch_bounds__(SF_BLOCK)
    semfuse_sum_partials(const float* partials, int blocks, float* loss) {
  __shared__ double sums[SF_BLOCK];
  const int n = blockIdx.x;
  sums[threadIdx.x] = semfuse::sum_partials(partials + static_cast<semfuse::i64>(n) * blocks,
                                            blocks, threadIdx.x, SF_BLOCK);
  __syncthreads();
  for (int half = SF_BLOCK / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[n] = static_cast<float>(sums[0]);
}

#else  // host build: the tests' window onto the same logic

#include <algorithm>
#include <vector>

namespace {

using semfuse::i64;

// Argument checks the GPU launchers make in Python; repeated here so a bad call from the
// tests fails with a code instead of reading out of bounds.
bool valid_inputs(int K) { return K >= 1 && K <= SEMFUSE_MAX_INPUTS; }
bool valid_window(int window) {
  return window >= 1 && window <= SEMFUSE_MAX_WINDOW && window % 2 == 1;
}

constexpr int kBadArgument = 1;

template <typename T>
int host_choose_max(const semfuse::Inputs* in, int K, i64 count, T* fused, int* labels,
                    i64 threads) {
  if (!valid_inputs(K) || threads < 1) return kBadArgument;
  for (i64 t = 0; t < threads; ++t) {
    semfuse::choose_max_strided<T>(*in, K, count, fused, labels, t, threads);
  }
  return 0;
}

template <typename T>
int host_cam_choose_max(const semfuse::Inputs* in, const semfuse::Weights* w, int K, int C,
                        i64 plane, i64 count, T* fused, int* labels, i64 threads) {
  if (!valid_inputs(K) || threads < 1 || C < 1 || plane < 1) return kBadArgument;
  for (i64 t = 0; t < threads; ++t) {
    semfuse::cam_choose_max_strided<T>(*in, *w, K, C, plane, count, fused, labels, t, threads);
  }
  return 0;
}

// Replays the GPU grid block by block; within a block, `threads` emulated threads share the
// tile copy exactly as the block's threads do.
template <typename T, bool kFuse>
int host_majority(const semfuse::Inputs* in, int K, const int* labels_in, i64 planes, int H,
                  int W, int window, int* labels_out, T* fused, int threads) {
  if (!valid_inputs(K) || !valid_window(window) || threads < 1 || H < 1 || W < 1) {
    return kBadArgument;
  }
  const int radius = window / 2;
  std::vector<int> tile(static_cast<size_t>(semfuse::tile_pitch(radius)) *
                        semfuse::tile_rows(radius));
  const i64 plane_size = static_cast<i64>(H) * W;
  for (i64 p = 0; p < planes; ++p) {
    for (int origin_y = 0; origin_y < H; origin_y += SEMFUSE_TILE_H) {
      for (int origin_x = 0; origin_x < W; origin_x += SEMFUSE_TILE_W) {
        for (int tid = 0; tid < threads; ++tid) {
          semfuse::majority_load_tile(labels_in + p * plane_size, H, W, origin_y, origin_x,
                                      radius, tile.data(), tid, threads);
        }
        for (int ty = 0; ty < SEMFUSE_TILE_H && origin_y + ty < H; ++ty) {
          for (int tx = 0; tx < SEMFUSE_TILE_W && origin_x + tx < W; ++tx) {
            const int label = semfuse::majority_tile_pixel(tile.data(), H, W, origin_y, origin_x,
                                                           radius, ty, tx, K);
            const i64 i = p * plane_size + static_cast<i64>(origin_y + ty) * W + origin_x + tx;
            labels_out[i] = label;
            if (kFuse) fused[i] = semfuse::load_one<T>(in->p[label], i);
          }
        }
      }
    }
  }
  return 0;
}

}  // namespace

extern "C" {

int semfuse_host_choose_max_f32(const semfuse::Inputs* in, int K, long long count, float* fused,
                                int* labels, long long threads) {
  return host_choose_max<float>(in, K, count, fused, labels, threads);
}

int semfuse_host_choose_max_f16(const semfuse::Inputs* in, int K, long long count,
                                semfuse::half_bits* fused, int* labels, long long threads) {
  return host_choose_max<semfuse::half_bits>(in, K, count, fused, labels, threads);
}

int semfuse_host_cam_choose_max_f32(const semfuse::Inputs* in, const semfuse::Weights* w, int K,
                                    int C, long long plane, long long count, float* fused,
                                    int* labels, long long threads) {
  return host_cam_choose_max<float>(in, w, K, C, plane, count, fused, labels, threads);
}

int semfuse_host_cam_choose_max_f16(const semfuse::Inputs* in, const semfuse::Weights* w, int K,
                                    int C, long long plane, long long count,
                                    semfuse::half_bits* fused, int* labels, long long threads) {
  return host_cam_choose_max<semfuse::half_bits>(in, w, K, C, plane, count, fused, labels,
                                                 threads);
}

int semfuse_host_majority_filter(const int* labels_in, int K, long long planes, int H, int W,
                                 int window, int* labels_out, int threads) {
  const semfuse::Inputs none = {};
  return host_majority<float, false>(&none, K, labels_in, planes, H, W, window, labels_out,
                                     nullptr, threads);
}

int semfuse_host_majority_fuse_f32(const semfuse::Inputs* in, int K, const int* labels_in,
                                   long long planes, int H, int W, int window, int* labels_out,
                                   float* fused, int threads) {
  return host_majority<float, true>(in, K, labels_in, planes, H, W, window, labels_out, fused,
                                    threads);
}

int semfuse_host_majority_fuse_f16(const semfuse::Inputs* in, int K, const int* labels_in,
                                   long long planes, int H, int W, int window, int* labels_out,
                                   semfuse::half_bits* fused, int threads) {
  return host_majority<semfuse::half_bits, true>(in, K, labels_in, planes, H, W, window,
                                                 labels_out, fused, threads);
}

int semfuse_host_adam_update(float* x, const float* g, float* m, float* v, long long count,
                             const semfuse::AdamScalars* s, long long threads) {
  if (threads < 1) return kBadArgument;
  for (i64 t = 0; t < threads; ++t) semfuse::adam_strided(x, g, m, v, count, *s, t, threads);
  return 0;
}

int semfuse_host_adam_update_device_step(float* x, const float* g, float* m, float* v,
                                         long long count, double lr, double beta1, double beta2,
                                         double eps, const int* step, long long threads) {
  if (threads < 1) return kBadArgument;
  const semfuse::AdamScalars s = semfuse::adam_scalars(*step, lr, beta1, beta2, eps);
  for (i64 t = 0; t < threads; ++t) semfuse::adam_strided(x, g, m, v, count, s, t, threads);
  return 0;
}

// Replays semfuse_first_layer_gradient block by block, each phase for all of a block's
// threads in turn, then semfuse_sum_partials.
int semfuse_host_first_layer_gradient(const float* image, const float* target,
                                      const float* weight, const float* bias,
                                      const float* offset, int N, int H, int W, int relu,
                                      float* grad, float* loss) {
  using namespace semfuse;
  if (N < 1 || H < 1 || W < 1) return kBadArgument;
  const int tiles_x = (W + kGradTile - 1) / kGradTile;
  const int tiles_y = (H + kGradTile - 1) / kGradTile;
  const i64 plane = static_cast<i64>(H) * W;
  std::vector<GradientTile> tile(1);
  GradientTile& s = tile[0];
  std::vector<float> partials(static_cast<size_t>(N) * tiles_x * tiles_y);
  std::vector<float> acc(3 * kGradThreads);
  std::vector<float> thread_loss(kGradThreads);
  for (int n = 0; n < N; ++n) {
    for (int by = 0; by < tiles_y; ++by) {
      for (int bx = 0; bx < tiles_x; ++bx) {
        const int oy = by * kGradTile;
        const int ox = bx * kGradTile;
        for (int tid = 0; tid < kGradThreads; ++tid) {
          gradient_load(s, image + n * 3 * plane, offset, H, W, oy, ox, tid, kGradThreads);
        }
        std::fill(acc.begin(), acc.end(), 0.f);
        std::fill(thread_loss.begin(), thread_loss.end(), 0.f);
        for (int c0 = 0; c0 < kGradChannels; c0 += kGradChunk) {
          for (int tid = 0; tid < kGradThreads; ++tid) {
            thread_loss[tid] += gradient_forward_chunk(s, weight, bias,
                                                       target + n * kGradChannels * plane, H, W,
                                                       oy, ox, c0, relu, tid, kGradThreads);
          }
          for (int tid = 0; tid < kGradThreads; ++tid) {
            gradient_backward_chunk(s, weight, c0, tid, &acc[3 * tid]);
          }
        }
        float total = 0.f;
        for (int tid = 0; tid < kGradThreads; ++tid) {
          gradient_store(grad + n * 3 * plane, H, W, oy, ox, tid, &acc[3 * tid]);
          total += thread_loss[tid];
        }
        partials[(static_cast<size_t>(n) * tiles_y + by) * tiles_x + bx] = total;
      }
    }
  }
  const int blocks = tiles_x * tiles_y;
  for (int n = 0; n < N; ++n) {
    loss[n] = static_cast<float>(sum_partials(&partials[static_cast<size_t>(n) * blocks], blocks, 0, 1));
  }
  return 0;
}

void semfuse_host_adam_scalars(long long t, double lr, double beta1, double beta2, double eps,
                               semfuse::AdamScalars* out) {
  *out = semfuse::adam_scalars(t, lr, beta1, beta2, eps);
}

void semfuse_host_half_to_float(const semfuse::half_bits* h, float* out, long long count) {
  for (i64 i = 0; i < count; ++i) out[i] = semfuse::half_to_float(h[i]);
}

}  // extern "C"

#endif
