// The block regime: one CUDA thread block per pair, an anti-diagonal wavefront over strips of
// blockDim.x grid rows (thread t owns row top + t of the strip); forward, then (kGrad) the
// backward over the strips bottom-up. Included by s2dtw_cuda.cu only.
#pragma once

#include <cstdint>
#include <limits>

#include "cell_math.cuh"
#include "pair_cells.cuh"

// The block's dynamic shared memory; the emulation's cuda_runtime.h defines it first.
#ifndef S2DTW_DYNAMIC_SHARED
#define S2DTW_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
// What a thread does between two polls of a progress flag (the emulation yields its OS thread).
#ifndef S2DTW_SPIN_PAUSE
#define S2DTW_SPIN_PAUSE() __nanosleep(64)
#endif

namespace s2dtw::cuda {
namespace {

constexpr int kMaxStrip = kMaxCudaStrip;  // rows per strip (= threads per block) in the block regime

// What a thread hands to the row above it in the backward, for one column q:
// au = E(p,q) w_up(p,q) (goes to (p-1, q)), ad = E(p,q) w_diag(p,q) (to (p-1, q-1)),
// su / sd = the same through the smoothing: G(i,j) w_up / w_diag of D[i,j]
// (to C[i-1,j] / C[i-1,j-1]); rows that carry no cost relay su / sd upwards.
struct Pub {
  double au, ad, su, sd;
};

// The multi-block regime's hand-on (docs/architecture.md, "CUDA kernels"): a strip publishes how far it has
// written its output (the forward's last row, the backward's first-row Pubs) in a progress flag in global memory,
// every kFlagChunk columns and at its end; the strip next in line polls it before it reads those columns.
// Release: the writer's stores, __threadfence, then the flag. Acquire: the flag (volatile), __threadfence, then
// the data, read volatile (past L1, which may hold a stale line of it).
constexpr int kFlagChunk = 64;

__device__ __forceinline__ int wait_flag(const int* flag, int need) {
  int seen;
  while ((seen = *reinterpret_cast<const volatile int*>(flag)) < need) S2DTW_SPIN_PAUSE();
  __threadfence();
  return seen;
}

__device__ __forceinline__ void publish(int* flag, int value) {
  __threadfence();
  *reinterpret_cast<volatile int*>(flag) = value;
}

__device__ __forceinline__ Pub load_pub(const Pub* at) {
  const volatile double* v = reinterpret_cast<const volatile double*>(at);
  return Pub{v[0], v[1], v[2], v[3]};
}

// One pair of the block regime, as thread t of T sees it. `rowbuf` holds the forward's row
// buffer (R of a strip's last row, for the next strip's first thread: R[top, q + 1] at
// [q + 1]) and then the backward's column buffer (one Pub per column, from the first row of
// the strip below), and an open end's seeds at [4 Q, 5 Q). A strip's tape holds its cell
// (top + t, q) at [((q + t) mod Q) * rows + t], so that the cells of one step (q + t = s) are
// contiguous (coalesced stores and loads); the full tape has strip `top`'s at [top * Q, ...).
// Recomputing (`ckpt` not null), the tape is one strip's (T Q entries), which every strip of the
// forward overwrites; the forward keeps the row buffer each strip reads, as checkpoint rows (Q + 1
// doubles each, see row_in), and the backward runs each strip's forward again (but the last's) from
// its checkpoint: the same code on the same inputs, so the same R and weights bit for bit. kVariant: as in ThreadPair.
// Multi-block regime (kMulti, its own instantiation: the one-block kernels carry none of its code): the pair's strips
// are dealt round-robin to `nb` blocks (this is block `kb`); every strip keeps its input row (checkpoint rows, `ckpt`,
// recomputing or not), the backward's Pubs go through a ring of nb column buffers (strip j writes ring j mod nb, reads
// ring j + 1 mod nb: `ring`), and a strip waits on the flags of the strip before it (forward flags [0, S), backward
// flags [S, 2 S), S strips).
template <typename Scalar, bool kGrad, bool kVariant, bool kMulti>
struct BlockPair {
  using M = MathOf<Scalar>;
  const Problem& pb;
  const Consts& k;
  CostView<double, Scalar> cv;
  Scalar* g;      // the pair's gradient (kGrad)
  Scalar* value;  // value[b] is the pair's
  int64_t b, width;
  double* rowbuf;
  Tape2<Scalar>* tape;  // the pair's (kGrad): all strips', or one strip's when recomputing
  double* ckpt;         // recomputing: the checkpoint rows; null: the full tape
  double* smem;         // forward: 2 T doubles; backward: 2 T Pubs
  int P, Q, t, T;
  int row0;        // W's row of walked row 0 (first_walked_row; 0 without kVariant)
  bool recompute;  // the tape is one strip's (this block's), each strip but the last recomputed in the backward
  Pub* ring;       // the backward's column buffers (nb of Q Pubs)
  int* flags;      // the pair's progress flags (kMulti)
  int nb, kb;      // blocks per pair, this block's index among them

  // Double buffers in shared memory, by the parity of the step s.
  __device__ __forceinline__ double* sbuf(int s) const { return (s & 1) ? smem + T : smem; }
  __device__ __forceinline__ Pub* pbuf(int s) const { return reinterpret_cast<Pub*>(smem) + ((s & 1) ? T : 0); }

  // The forward's row buffers of the strip at `top`: the one it reads (R of the row above) and the
  // one it writes (R of its last row), row_in + out_step. With the full tape both are rowbuf (in
  // place); recomputing, strip k reads checkpoint row k and writes row k + 1, so every strip's input is kept.
  __device__ __forceinline__ double* row_in(int top) const { return ckpt ? ckpt + int64_t(top / T) * (Q + 1) : rowbuf; }
  __device__ __forceinline__ int out_step() const { return ckpt ? Q + 1 : 0; }
  __device__ __forceinline__ double* row_out(int top) const { return row_in(top) + out_step(); }
  // Where the strip at `top` keeps its tape.
  __device__ __forceinline__ Tape2<Scalar>* strip_tape(int top) const {
    return recompute ? tape : tape + int64_t(top) * Q;
  }
  __device__ __forceinline__ int strips() const { return (P + T - 1) / T; }

  // R of the row above at in[x] (thread 0 of the strip at `top` > 0): once the strip above has published it.
  __device__ __forceinline__ double row_above(const double* in, int top, int x, int& seen) const {
    if constexpr (!kMulti) {
      return in[x];
    } else {
      if (x > seen) seen = wait_flag(flags + top / T - 1, x);
      return *reinterpret_cast<const volatile double*>(in + x);
    }
  }

  // Thread t of the strip at `top` computes cell (p, q) = (top + t, s - t) at step s.
  // Only the steps where some row of the strip has a band column run: from lo(top)
  // (thread 0's first band cell) to hi(top + rows - 1) + rows - 1 (the last thread's
  // last); the band's ends only move right, so none is missed. A cell reads R of the row
  // above from thread t - 1 / the row buffer only inside that row's band, where it was
  // computed; elsewhere R is +inf. The tape goes to `ts` (kGrad).
  // `replay`: recomputing a strip for the backward (its output row and flag were written the first time).
  __device__ __forceinline__ void forward_strip(int top, Tape2<Scalar>* ts, bool replay) const {
    const double inf = infinity<double>();
    const int rows = min(T, P - top);
    const int p = top + t;
    const bool active = t < rows;
    // The last row of a strip with one below (or, for an open end's softmin, of the last strip).
    const bool feeds_next = !replay && t == rows - 1 && (top + rows < P || (kVariant && pb.open_end));
    int seen = replay ? Q + 1 : 0;                              // what the flag of the strip above showed thread 0 last
    const bool open_row = kVariant && pb.open_begin && p == 0;  // entered from R's zero row, diagonally only
    const Span band = span(columns(P, Q, width, active ? p : 0));
    const Span above = p > 0 && active ? span(columns(P, Q, width, p - 1)) : Span{1, 0};
    const int s_first = int(columns(P, Q, width, top).lo);
    const int s_end = int(columns(P, Q, width, top + rows - 1).hi) + rows;
    double* in = row_in(top);
    const int step = out_step();  // row_out(top) = in + step
    // The thread's first cell is q0; left of it R is +inf in rows top + 1.. of the
    // strip (q0 - 1 < lo(top) <= their lo), and row top reads R[p, q0] from the buffer.
    const int q0 = max(s_first - t, 0);
    double diag = q0 == 0                             ? (p == 0 ? 0.0 : inf)
                  : (t == 0 && within(above, q0 - 1)) ? row_above(in, top, q0, seen)
                                                      : inf;  // R[p, q]
    double left = inf;                                        // R[p+1, q]
    // W[p, q], a step ahead
    double w_cell = active && within(band, q0) ? grid_acc<kVariant, M, Scalar>(pb, cv, row0 + p, q0, k) : 0.0;
    int srow = s_first % Q;  // s mod Q
    // Before anyone writes the row buffer: with 2 rows, the last thread's first cell
    // (top + 1, q0 - 1) goes to in[step + q0], which thread 0 has just read (in place: step = 0).
    __syncthreads();
    for (int s = s_first; s < s_end; ++s) {
      const int q = s - t;
      if (active && q >= 0 && q < Q) {
        // R[p, q+1]: from the row above, computed at step s - 1 (or in the strip above).
        const double up = !within(above, q) ? inf : t == 0 ? row_above(in, top, q + 1, seen) : sbuf(s + 1)[t - 1];
        M w[3] = {M(0), M(0), M(0)};
        double r = inf;  // outside the band: no path, zero weights
        if (within(band, q))
          r = w_cell +
              softmin<kVariant, M>(diag, up, left, k.gamma<M>(), k.hard_gamma, kGrad ? w : static_cast<M*>(nullptr));
        if (within(band, q + 1)) w_cell = grid_acc<kVariant, M, Scalar>(pb, cv, row0 + p, q + 1, k);
        if constexpr (kGrad) ts[int64_t(srow) * rows + t] = Tape2<Scalar>{Scalar(w[0]), Scalar(w[1])};
        // In place: thread 0 read in[q + 1] at step q <= this step (same thread when rows == 1).
        if (feeds_next) {
          in[step + q + 1] = r;
          if (kMulti && (q + 1) % kFlagChunk == 0) publish(flags + top / T, q + 1);
        }
        if (!(kVariant && pb.open_end) && p == P - 1 && q == Q - 1) value[b] = Scalar(r);
        sbuf(s)[t] = r;
        diag = open_row ? 0.0 : up;
        left = r;
      }
      __syncthreads();
      if (++srow == Q) srow = 0;
    }
    if (kMulti && feeds_next) publish(flags + top / T, Q + 1);  // all of it
  }

  // An open end's value, from the last row's R that the last strip left in the row buffer; its
  // weights seed the backward. Then a barrier: the strip's last thread reads them there.
  __device__ __forceinline__ void open_end_value() const {
    if (t == 0) {
      double* seeds = kGrad ? rowbuf + 4 * int64_t(Q) : nullptr;  // end_value writes only the non-zero ones
      if constexpr (kGrad)
        for (int q = 0; q < Q; ++q) seeds[q] = 0.0;
      value[b] = Scalar(end_value(pb, row_out(((P - 1) / T) * T) + 1, Q, 1, seeds));
    }
    __syncthreads();
  }

  // Steps in reverse: thread t at step s does cell (top + t, s - t) and needs what thread
  // t + 1 published at steps s + 1 (its cell (p+1, q)) and s + 2 (cell (p+1, q+1), kept
  // from the previous step). With a band, row p needs the cells grad_columns(p) (and, for
  // the last row of the strip, those that feed it: up to hi(p + 1)); the steps run over
  // those of all rows of the strip. What a row publishes is nonzero only in its band,
  // and, for a weak grid's threshold row relaying the smoothing terms, in the band of the
  // row below: `below` is that range of row p + 1, read as zeros outside. The tape is
  // read inside the band only (it is stale elsewhere). `reach`: how many rows below a
  // strip feed it; `relay`: 1 where threshold rows relay the smoothing terms. Strips run bottom-up.
  __device__ __forceinline__ void backward_strip(int top) const {
    const int j = top / T;
    // What the first row of the strip below published, and where this strip's goes (one buffer, in place, with
    // one block per pair).
    const Pub* col_in = kMulti ? ring + int64_t((j + 1) % nb) * Q : ring;
    Pub* col_out = kMulti ? ring + int64_t(j % nb) * Q : ring;
    const int* flag_in = kMulti ? flags + strips() + j + 1 : nullptr;  // backward flags: columns >= Q - value done
    // col_out's buffer is also strip j + nb - 1's col_in, whose last thread reads column q at step q + rows - 1 >= q.
    // That strip publishes Q - q' at its step q', once every later step is done: Q - q + 1 (or its final Q) shows
    // column q read, so only then may this strip overwrite it.
    const int* flag_free = kMulti && nb > 1 && j + nb - 1 < strips() - 1 ? flags + strips() + j + nb - 1 : nullptr;
    int seen = 0, freed = 0;
    const int reach = pb.smooth ? (pb.weak ? 2 : 1) : 1;
    const int relay = pb.smooth && pb.weak ? 1 : 0;
    const int rows = min(T, P - top);
    const int p = top + t;
    const bool active = t < rows;
    const int wp = row0 + p;  // W's row
    const bool cost_row = !pb.weak || (wp & 1);
    const Span band = span(columns(P, Q, width, active ? p : 0));
    const Span below = active && p + 1 < P ? Span{int(columns(P, Q, width, p + 1).lo),
                                                  int(columns(P, Q, width, min(p + 1 + relay, P - 1)).hi)}
                                           : Span{1, 0};
    const Span gcols = span(grad_columns(pb, P, Q, width, active ? p : 0));  // where this row writes the gradient
    const int s_first = int(grad_columns(pb, P, Q, width, top).lo);
    const int s_last = int(columns(P, Q, width, min(top + rows - 1 + reach, P - 1)).hi) + rows - 1;
    const Tape2<Scalar>* ts = strip_tape(top);
    double ad_next = 0.0, left_prod = 0.0, sd_next = 0.0, s_left = 0.0;  // as in ThreadPair::backward_row
    int srow = s_last % Q;
    for (int s = s_last; s >= s_first; --s) {
      const int q = s - t;
      if (active && q >= 0 && q < Q) {
        Pub in{0.0, 0.0, 0.0, 0.0};
        if (within(below, q)) {
          if (t != rows - 1) {
            in = pbuf(s + 1)[t + 1];
          } else if constexpr (!kMulti) {
            in = col_in[q];
          } else {
            if (Q - q > seen) seen = wait_flag(flag_in, Q - q);
            in = load_pub(col_in + q);
          }
        }
        const double diag_prod = ad_next;
        ad_next = in.ad;
        const bool in_band = within(band, q);
        const bool corner = !(kVariant && pb.open_end) && p == P - 1 && q == Q - 1;
        double e = corner ? 1.0 : !in_band ? 0.0 : in.au + diag_prod + left_prod;    // 0 outside the band, exactly
        if (kVariant && pb.open_end && p == P - 1) e += rowbuf[4 * int64_t(Q) + q];  // the end softmin's weight
        const Tape2<Scalar> tw = in_band ? ts[int64_t(srow) * rows + t] : Tape2<Scalar>{Scalar(0), Scalar(0)};
        const double wd = double(tw.diag), wu = double(tw.up);
        Pub out{e * wu, e * wd, 0.0, 0.0};
        left_prod = e * fmax(1.0 - wd - wu, 0.0);
        if (is_cost_cell(pb, wp, q)) {
          const int64_t i = cost_index(pb, wp), j = cost_index(pb, q);
          double dc = e;
          if (pb.smooth) {
            dc += s_left + in.su + sd_next;
            sd_next = in.sd;
            if (in_band) {
              M w[3];
              smoothed_acc<kVariant, M, Scalar>(pb, cv, i, j, k, w);
              out.su = e * double(w[1]);
              out.sd = e * double(w[2]);
              s_left = e * double(w[0]);
            } else {  // E = 0: nothing to spread
              s_left = 0.0;
            }
          }
          if (within(gcols, q)) g[i * pb.stride_i + j * pb.stride_j] = Scalar(dc);
        } else if (!cost_row) {  // a weak grid's threshold row: pass the smoothing terms up
          out.su = in.su;
          out.sd = in.sd;
        }
        pbuf(s)[t] = out;
        // In place: the strip's last thread read col_in[q] at step q + rows - 1 >= this one.
        if (t == 0 && top > 0) {
          if (flag_free && min(Q - q + 1, Q) > freed) freed = wait_flag(flag_free, min(Q - q + 1, Q));
          col_out[q] = out;
          if (kMulti && (Q - q) % kFlagChunk == 0) publish(flags + strips() + j, Q - q);
        }
      }
      __syncthreads();
      srow = srow == 0 ? Q - 1 : srow - 1;
    }
    if (kMulti && t == 0 && top > 0) publish(flags + strips() + j, Q);
  }
};

// gridDim.x = pairs x nb: block kb of pair b runs strips kb, kb + nb, ... forward, then the same strips
// backward, bottom-up. A block's sequence of strips is a subsequence of the one order in which all strips
// can run (forward top-down, then backward bottom-up), each strip waiting only on earlier ones: with all
// blocks co-resident (launch code), the earliest unfinished strip always runs, so nothing deadlocks.
// Each pair's buffers (offsets in doubles into a pair's scratch; 0: none) come as separate parameters: in one
// struct parameter they cost the float32 one-block kernels 6-11 % more SASS per cell (ptxas 13, sm_90).
template <typename Scalar, bool kGrad, bool kVariant, int kMaxThreads, bool kMulti>
__global__ void __launch_bounds__(kMaxThreads)
    block_kernel(const Problem pb, const Consts k, const Scalar* __restrict__ cost, Scalar* __restrict__ value,
                 Scalar* __restrict__ grad, double* scratch_all, int64_t scratch_stride, Tape2<Scalar>* tape_all,
                 int64_t tape_stride,  // tape entries per pair
                 int64_t ckpt_offset,  // the checkpoint rows (recomputing, or several blocks per pair)
                 int64_t ring_offset,  // several blocks per pair: the backward's ring of column buffers
                 int* flags_all,       // several blocks per pair: 2 S progress flags per pair, zeroed before the launch
                 int64_t flags_stride,
                 int blocks_per_pair,  // 1: the block regime, more: the multi-block regime
                 bool recompute) {
  S2DTW_DYNAMIC_SHARED(double, smem);
  const int nb = kMulti ? blocks_per_pair : 1;
  const int64_t b = blockIdx.x / nb;
  const int kb = int(blockIdx.x % nb);
  const int t = threadIdx.x, T = blockDim.x;
  int64_t n, m;
  const bool ok = pair_lengths(pb, b, n, m);
  const int P = int(kVariant ? walked_rows(pb, n) : grid_extent(pb, n)), Q = int(grid_extent(pb, m));
  const int row0 = kVariant ? int(first_walked_row(pb)) : 0;
  const int64_t offset = pair_offset(pb, b);
  Scalar* g = kGrad ? grad + offset : nullptr;
  const int64_t first = int64_t(kb) * T + t, step = int64_t(nb) * T;  // this thread among the pair's
  if constexpr (kGrad) zero_padding(pb, g, n, m, first, step);
  if (!ok) {  // uniform over the block: nobody reaches a barrier
    if (t == 0 && kb == 0) value[b] = Scalar(std::numeric_limits<double>::quiet_NaN());
    return;
  }
  const int64_t width = band_width(pb, P, Q);
  if constexpr (kGrad)
    if (pb.banded) zero_off_band(pb, g, n, m, P, Q, width, first, step);
  double* scratch = scratch_all + b * scratch_stride;
  Tape2<Scalar>* tape = kGrad ? tape_all + b * tape_stride : nullptr;
  if (recompute) tape += int64_t(kb) * T * Q;  // each block its own strip's tape
  const BlockPair<Scalar, kGrad, kVariant, kMulti> pair{
      pb,
      k,
      {cost + offset, pb.stride_i, pb.stride_j},
      g,
      value,
      b,
      width,
      scratch,
      tape,
      ckpt_offset ? scratch + ckpt_offset : nullptr,
      smem,
      P,
      Q,
      t,
      T,
      row0,
      kGrad && recompute,
      reinterpret_cast<Pub*>(kMulti ? scratch + ring_offset : scratch),
      kMulti ? flags_all + b * flags_stride : nullptr,
      nb,
      kb};
  for (int top = kb * T; top < P; top += nb * T) pair.forward_strip(top, kGrad ? pair.strip_tape(top) : nullptr, false);
  const int last = ((P - 1) / T) * T;  // the last strip's top
  if constexpr (kVariant)
    if (pb.open_end && (last / T) % nb == kb) pair.open_end_value();
  if constexpr (kGrad) {
    // This block's strips bottom-up. Recomputing, the last strip's tape is kept from the forward, the others'
    // recomputed from their checkpoints (a second inlined copy of forward_strip: one shared call site cost ~8 %
    // more instructions per cell).
    const int mine = last / T - ((last / T - kb) % nb + nb) % nb;  // this block's last strip (< kb: none)
    for (int top = mine * T; top >= 0 && mine >= kb; top -= nb * T) {
      if (pair.recompute && top != last) pair.forward_strip(top, pair.tape, true);
      pair.backward_strip(top);
    }
  }
}

}  // namespace
}  // namespace s2dtw::cuda
