// The loss and its gradient for the first VGG19 layer (conv1_1, or relu1_1 after it), in one
// pass that never stores the 64-channel activations.
//
//   z = b + W' * (x - offset)          (W': conv1_1 with the input normalisation folded in,
//   r = act(z) - target                 as export/gradient_graph.py folds it)
//   loss = sum r^2,  dL/dx = W'^T * (2 r act'(z))
//
// A block owns a TILE x TILE tile of pixels. It loads the pixels with a two-pixel halo,
// then for each chunk of output channels computes 2 r act'(z) on the tile plus a one-pixel
// halo into shared memory (one thread per halo position: the block has that many threads),
// and accumulates the transposed convolution of that chunk into each pixel's three gradient
// values. Activations are recomputed on the halo (1.27x the forward work) so that blocks
// never exchange data. On the GPU the weights sit in constant memory, where every thread of
// a warp reads the same one: the multiply-adds take them as operands, with no loads.
//
// Written as phases over (first, stride) thread indices, separated on the GPU by
// __syncthreads(): the host build replays each phase for every thread of a block in turn,
// so CI checks the tiling itself, borders included, against autograd.
#pragma once

#include "fusion_kernels.cuh"

#define SEMFUSE_GRAD_TILE 16
#define SEMFUSE_GRAD_CHUNK 16
#define SEMFUSE_GRAD_CHANNELS 64

namespace semfuse {

constexpr int kGradTile = SEMFUSE_GRAD_TILE;
constexpr int kGradChunk = SEMFUSE_GRAD_CHUNK;
constexpr int kGradChannels = SEMFUSE_GRAD_CHANNELS;
constexpr int kGradTaps = 27;                   // 3 input channels x 3 x 3
constexpr int kPixelEdge = kGradTile + 4;       // pixels: tile + 2 on each side
constexpr int kResidualEdge = kGradTile + 2;    // 2 r act'(z): tile + 1 on each side
constexpr int kGradPixels = kGradTile * kGradTile;
// Whole warps covering the halo positions: 352 threads, 11 warps.
constexpr int kGradThreads = (kResidualEdge * kResidualEdge + 31) / 32 * 32;

// About 26 KiB: inside the 48 KiB of static shared memory every GPU grants.
struct GradientTile {
  float pixels[3][kPixelEdge][kPixelEdge];  // x - offset; zero outside the image
  float residual[kGradChunk][kResidualEdge][kResidualEdge];
};

// Phase 1: the pixels into the tile. (oy, ox): the tile's first pixel.
SF_HD void gradient_load(GradientTile& s, const float* image, const float* offset, int H, int W,
                         int oy, int ox, int first, int stride) {
  constexpr int area = kPixelEdge * kPixelEdge;
  for (int i = first; i < 3 * area; i += stride) {
    const int c = i / area;
    const int row = (i % area) / kPixelEdge;
    const int col = i % kPixelEdge;
    const int y = oy - 2 + row;
    const int x = ox - 2 + col;
    // Zero padding of (x - offset), as conv1_1 pads the normalised image.
    const bool inside = y >= 0 && y < H && x >= 0 && x < W;
    s.pixels[c][row][col] =
        inside ? image[(static_cast<i64>(c) * H + y) * W + x] - offset[c] : 0.f;
  }
}

// Phase 2, once per chunk of channels [c0, c0 + kGradChunk): 2 r act'(z) on the tile and its
// halo (zero outside the image). Returns this thread's share of the loss: r^2 summed over the
// tile's own pixels only, so that halos are not counted twice. weight: [c][ci][ky][kx].
SF_HD float gradient_forward_chunk(GradientTile& s, const float* weight, const float* bias,
                                   const float* target, int H, int W, int oy, int ox, int c0,
                                   int relu, int first, int stride) {
  float loss = 0.f;
  for (int p = first; p < kResidualEdge * kResidualEdge; p += stride) {
    const int row = p / kResidualEdge;
    const int col = p % kResidualEdge;
    const int y = oy - 1 + row;
    const int x = ox - 1 + col;
    const bool inside = y >= 0 && y < H && x >= 0 && x < W;
    const bool own = inside && row >= 1 && row <= kGradTile && col >= 1 && col <= kGradTile;
    float patch[kGradTaps];
    SF_UNROLL for (int ci = 0; ci < 3; ++ci) {
      SF_UNROLL for (int ky = 0; ky < 3; ++ky) {
        SF_UNROLL for (int kx = 0; kx < 3; ++kx) {
          patch[(ci * 3 + ky) * 3 + kx] = s.pixels[ci][row + ky][col + kx];
        }
      }
    }
    SF_UNROLL for (int cc = 0; cc < kGradChunk; ++cc) {
      const int c = c0 + cc;
      float g = 0.f;
      if (inside) {
        float z = bias[c];
        SF_UNROLL for (int k = 0; k < kGradTaps; ++k) z += weight[c * kGradTaps + k] * patch[k];
        const bool active = z > 0.f;
        const float a = relu && !active ? 0.f : z;
        const float r = a - target[(static_cast<i64>(c) * H + y) * W + x];
        if (own) loss += r * r;
        // ReLU's derivative at 0 is 0, as in torch and the exported graph's mask.
        g = relu && !active ? 0.f : 2.f * r;
      }
      s.residual[cc][row][col] = g;
    }
  }
  return loss;
}

// Phase 3, once per chunk: the chunk's transposed convolution at thread `tid`'s own pixel,
// accumulated into acc[3] (dL/dx of the pixel's three channels).
SF_HD void gradient_backward_chunk(const GradientTile& s, const float* weight, int c0, int tid,
                                   float acc[3]) {
  if (tid >= kGradPixels) return;
  const int ty = tid / kGradTile;
  const int tx = tid % kGradTile;
  SF_UNROLL for (int cc = 0; cc < kGradChunk; ++cc) {
    const float* w = weight + (c0 + cc) * kGradTaps;
    SF_UNROLL for (int ci = 0; ci < 3; ++ci) {
      SF_UNROLL for (int ky = 0; ky < 3; ++ky) {
        SF_UNROLL for (int kx = 0; kx < 3; ++kx) {
          // z at pixel (y + 1 - ky, x + 1 - kx) used x at (y, x) through tap (ky, kx).
          acc[ci] += w[(ci * 3 + ky) * 3 + kx] * s.residual[cc][ty + 2 - ky][tx + 2 - kx];
        }
      }
    }
  }
}

// Phase 4: thread `tid`'s pixel of the gradient, when it lies inside the image.
SF_HD void gradient_store(float* grad, int H, int W, int oy, int ox, int tid, const float acc[3]) {
  if (tid >= kGradPixels) return;
  const int y = oy + tid / kGradTile;
  const int x = ox + tid % kGradTile;
  if (y >= H || x >= W) return;
  SF_UNROLL for (int ci = 0; ci < 3; ++ci) grad[(static_cast<i64>(ci) * H + y) * W + x] = acc[ci];
}

// The loss of image n: its blocks' partial sums, added in double in block order (the same
// order on every run, so a replayed loop reports the same losses).
SF_HD double sum_partials(const float* partials, int blocks, int first, int stride) {
  double total = 0.0;
  for (int i = first; i < blocks; i += stride) total += partials[i];
  return total;
}

}  // namespace semfuse
