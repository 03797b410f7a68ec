// Host side of the CUDA module: the workspace's sizes (tape and wavefront buffers) and the
// plan (thread or block regime, strip height) from a cycle model. Included by s2dtw_cuda.cu only.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "block_kernel.cuh"
#include "cell_math.cuh"
#include "pair_cells.cuh"

namespace s2dtw::cuda {
namespace {

constexpr size_t kAlign = 256;

struct Plan {
  bool block_regime = true;
  int strip = 32;          // rows per strip = threads per block (block regime)
  int blocks = 1;          // blocks per pair (block regime; more than 1: the multi-block regime)
  bool recompute = false;  // block regime with a gradient: keep one strip's tape (per block), recompute each strip
};

// The device as the plan sees it: SMs, and how many blocks of each strip height (32 << i threads) an SM holds
// at once (cudaOccupancyMaxActiveBlocksPerMultiprocessor of the multi-block kernel).
constexpr int kMaxMultiStrip = 512;  // the multi-block regime's tallest strip

struct Device {
  int sms = 1;
  int per_sm[6] = {0, 0, 0, 0, 0, 0};  // 0 above kMaxMultiStrip
  int64_t resident(int T) const {
    int i = 0;
    while ((32 << i) < T) ++i;
    return int64_t(sms) * per_sm[i];
  }
};

struct Sizes {
  int64_t P = 0, Q = 0;  // grid extents of a padded pair
  Plan plan;
  int64_t tape_per_pair = 0;  // tape entries: P Q, or strip Q when recomputing
  size_t tape_bytes = 0;      // 0 without a gradient
  size_t scratch_bytes = 0;   // float64 wavefront buffers (and checkpoint rows)
  int64_t scratch_per_pair = 0;
  int64_t ckpt_offset = 0;  // where a pair's checkpoint rows start in its scratch (0: none)
  int64_t ring_offset = 0;  // multi-block: where a pair's backward column buffers start in its scratch
  size_t flags_bytes = 0;   // multi-block: 2 S int progress flags per pair, after the scratch
  size_t total = 0;
};

size_t checked_mul(size_t a, size_t b) {
  size_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::runtime_error("s2dtw (cuda): problem too large (size overflow)");
  return r;
}

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("s2dtw (cuda): ") + what + ": " + cudaGetErrorString(err));
}

int sm_count() {
  int dev = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return std::max(sms, 1);
}

// Bytes of dynamic shared memory of a block-regime block of T threads.
constexpr size_t block_shared_bytes(bool grad, int T) { return 2 * size_t(T) * (grad ? sizeof(Pub) : sizeof(double)); }

// A cycle model of an H100/H200 SM (4 schedulers). A cell costs `ins` warp-instructions
// of issue (the static SASS of the cell loops for sm_90, forward + backward, as
// benchmarks/cuda_predict.py reports them) and, on the dependent chain, ~kChain cycles per
// instruction (about half of them, ~6 cycles each), plus a barrier and shared-memory hand-over
// per step in the block regime. Work follows the band: only band cells are issued, only
// band steps run. Each regime's estimate is waves x max(chain latency, the SM's issue).
// Multi-block (nb blocks per pair, S strips; strip_steps: the steps of all strips): each block
// runs ceil(S / nb) strips one after the other, and strip i starts (kFlagChunk + T) steps after strip i - 1
// (its first flag), once in the forward and once in the backward; a step costs the chain's latency or
// the SM's issue of the T / 32 warps of every block on it, whichever is more:
//   est = (strip_steps / S ceil(S / nb) + 2 (nb - 1) (kFlagChunk + T))
//         x max(ins kChain + kStepSync, ceil(pairs nb / SMs) ceil(T / 32) ins / 4).
// Over Problem::cuda_tape_budget (the full tape of all pairs) the block regimes recompute (Plan::recompute): the
// multi-block regime then takes at most as many blocks as keep their tapes (one strip's each) within a quarter
// of the budget, per strip height, and recomputing (more than one strip per block) runs each strip's forward
// once more: kRedo times the estimate (the forward is about half of a cell's instructions).
// Problem::cuda_regime (1 thread, 2 block, 3 multi-block) and cuda_strip override the choice.
Plan choose_plan(const Problem& pb, int64_t P, int64_t Q, const Device& dev, bool grad, bool f64) {
  if (pb.cuda_strip && (pb.cuda_strip < 32 || pb.cuda_strip > kMaxStrip || pb.cuda_strip % 32 != 0))
    throw std::invalid_argument("s2dtw (cuda): the strip must be a multiple of 32 in [32, 1024]");
  const double ins = f64 ? (grad ? 985.0 : 560.0) : (grad ? 513.0 : 230.0);
  constexpr double kChain = 3.0, kStepSync = 80.0, kThreadResident = 640.0, kRedo = 1.5;
  const double np = double(pb.n_pairs), s = double(dev.sms);
  const double entry = double(f64 ? sizeof(Tape2<double>) : sizeof(Tape2<float>));
  const double budget = double(std::max<int64_t>(pb.cuda_tape_budget, 0));
  const bool over = grad && np * double(P) * double(Q) * entry > budget;  // the full tape does not fit
  const int64_t width = band_width(pb, P, Q);
  double band_cells = 0;  // of a padded pair
  for (int64_t p = 0; p < P; ++p) band_cells += double(columns(P, Q, width, p).hi - columns(P, Q, width, p).lo + 1);
  // Thread regime: one chain of band_cells cells per thread, 32 threads per warp.
  const double warps_per_sm = std::min(kThreadResident / 32.0, std::ceil(np / (32.0 * s)));
  const double thread_est =
      std::ceil(np / (kThreadResident * s)) * band_cells * ins * std::max(kChain, warps_per_sm / 4.0);
  Plan best{true, 32};
  double best_est = -1;
  const bool forced = pb.cuda_regime != 0;
  for (int T = 32; T <= kMaxStrip; T *= 2) {
    if (pb.cuda_strip ? T != pb.cuda_strip : (T > 32 && T / 2 >= P)) continue;  // taller strips only add idle threads
    const double per_sm = std::min({32.0, 2048.0 / T, std::ceil(np / s)});
    double steps = 0, warp_cells = 0;  // per pair: steps run, warp-cells issued
    for (int64_t top = 0; top < P; top += T) {
      const int64_t rows = std::min<int64_t>(T, P - top);
      const int64_t span = columns(P, Q, width, top + rows - 1).hi - columns(P, Q, width, top).lo + 1;
      steps += double(span + rows - 1);
      warp_cells += std::ceil(rows / 32.0) * (double(span) + 31.0);
    }
    const double step_cycles = ins * kChain + kStepSync;
    const bool one_redo = over && P > T;
    const double est = std::ceil(np / (per_sm * s)) * std::max(steps * step_cycles, per_sm * warp_cells * ins / 4.0) *
                       (one_redo ? kRedo : 1.0);
    if ((!forced || pb.cuda_regime == 2) && (best_est < 0 || est < best_est))
      best_est = est, best = Plan{true, T, 1, one_redo};
    const int64_t S = (P + T - 1) / T;
    int64_t nb = std::min<int64_t>(S, dev.resident(T) / std::max<int64_t>(pb.n_pairs, 1));
    if (over && nb > 1)  // the blocks' tapes (one strip's each) within a quarter of the budget
      nb = std::clamp<int64_t>(int64_t(budget / 4.0 / (np * double(T) * double(Q) * entry)), 1, nb);
    if (forced ? pb.cuda_regime != 3 || nb < 1 : nb < 2) continue;
    const bool redo = over && P > T * nb;
    const double multi_step = std::max(step_cycles, std::ceil(np * double(nb) / s) * std::ceil(T / 32.0) * ins / 4.0);
    const double multi_steps = steps / double(S) * std::ceil(double(S) / double(nb));  // of a block's strips
    const double multi_est =
        (multi_steps + 2.0 * double(nb - 1) * (kFlagChunk + T)) * multi_step * (redo ? kRedo : 1.0);
    if (best_est < 0 || multi_est < best_est)
      best_est = multi_est, best = Plan{true, T, int(std::max<int64_t>(nb, 1)), redo};
  }
  if (pb.cuda_regime == 3 && best_est < 0)  // more blocks than the device holds at once could deadlock
    throw std::runtime_error(
        "s2dtw (cuda): the multi-block regime needs a block per pair co-resident, in strips "
        "of at most " +
        std::to_string(kMaxMultiStrip) + " rows (" + std::to_string(pb.n_pairs) + " pairs, " +
        std::to_string(dev.resident(pb.cuda_strip ? pb.cuda_strip : 32)) + " blocks fit)");
  if (forced ? pb.cuda_regime == 1 : thread_est < best_est) best = Plan{false, best.strip, 1, false};
  return best;
}

// The workspace of a call and the plan it is laid out for (workspace_bytes and run agree: the same
// function of the problem and the device). Recompute-in-backward (Plan::recompute, choose_plan: block regime
// only, where it saves anything, when the full tape of all pairs would exceed Problem::cuda_tape_budget):
// the tape is one strip's per block, and the scratch also holds the checkpoint rows (Q + 1 doubles for each
// strip and one more, see BlockPair::row_in).
// The multi-block regime always keeps the checkpoint rows (a strip's input row, read by the strip below
// while the next is written) and, with a gradient, a ring of nb column buffers (4 Q doubles each).
template <typename Scalar>
Sizes sizes(const Problem& pb, bool with_grad, const Device& dev) {
  if (pb.n_pairs < 0 || pb.padded_n < 1 || pb.padded_m < 1)
    throw std::invalid_argument("s2dtw (cuda): invalid problem (n_pairs < 0 or empty padded pairs)");
  Sizes z;
  z.P = grid_extent(pb, pb.padded_n);
  z.Q = grid_extent(pb, pb.padded_m);
  if (z.P > INT_MAX / 2 || z.Q > INT_MAX / 2)
    throw std::runtime_error("s2dtw (cuda): sequences longer than 2^29 are not supported");
  Plan& plan = z.plan;
  plan = choose_plan(pb, z.P, z.Q, dev, with_grad, std::is_same_v<Scalar, double>);
  const size_t np = size_t(pb.n_pairs), entry = sizeof(Tape2<Scalar>);
  checked_mul(checked_mul(np, checked_mul(size_t(z.P), size_t(z.Q))), entry);  // the full tape's bytes fit size_t
  z.tape_per_pair = plan.recompute ? int64_t(plan.blocks) * plan.strip * z.Q : z.P * z.Q;
  if (with_grad) z.tape_bytes = align_up(checked_mul(checked_mul(np, size_t(z.tape_per_pair)), entry));
  // Regime-independent: thread regime needs Q + 1 (forward) / 2 Q + 2 padded_m
  // (backward) doubles per pair, block regime Q + 1 / 4 Q (one Pub per column); an open end's
  // seeds (the last row's E) Q more with a gradient.
  z.scratch_per_pair = with_grad ? (pb.open_end ? 5 : 4) * z.Q : z.Q + 1;
  const int64_t strips = (z.P + plan.strip - 1) / plan.strip;
  if (plan.recompute || plan.blocks > 1) {
    z.ckpt_offset = z.scratch_per_pair;
    z.scratch_per_pair += (strips + 1) * (z.Q + 1);
  }
  if (plan.blocks > 1 && with_grad) {
    z.ring_offset = z.scratch_per_pair;
    z.scratch_per_pair += int64_t(plan.blocks) * 4 * z.Q;
  }
  z.scratch_bytes = align_up(checked_mul(checked_mul(np, size_t(z.scratch_per_pair)), sizeof(double)));
  if (plan.blocks > 1) z.flags_bytes = align_up(checked_mul(np, size_t(2 * strips) * sizeof(int)));
  z.total = z.tape_bytes + z.scratch_bytes + z.flags_bytes + kAlign;  // slack to align the caller's pointer
  return z;
}

}  // namespace
}  // namespace s2dtw::cuda
