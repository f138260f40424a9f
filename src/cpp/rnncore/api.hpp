// The C++ core's public surface: argument structs for one direction of one
// layer, and the table of per-ISA kernels. No Python, no allocation policy:
// the caller owns every buffer named here.
//
// T = time steps, B = batch, I = input size, H = hidden size, G = gates,
// N = T*B rows of a sequence in either layout (time-major or batch-first).
#pragma once
#include <cstdint>

namespace rnncore {

// The cell kinds, one line each: X(enumerator, name in Python, gates per
// unit, shape of weight_hh, cell type). The enum, its numbers, the bindings'
// export (_core.CellKind), NumGates, RecWeightOf and driver.hpp's map from a
// kind to its cell type (WithCell) all come from this list; the Python layers
// take the kinds from _core. The cell type is a template over the element
// type, defined at the end of the cell's own file (cells/*.hpp); a cell with
// variants (gru's reset_after) picks one in its With.
#define RNNCORE_CELL_KINDS(X)                       \
  X(kLstm, lstm, 4, kMatrix, LstmCell)              \
  X(kGru, gru, 3, kMatrix, GruCell)                 \
  X(kRnnTanh, rnn_tanh, 1, kMatrix, RnnTanhCell)    \
  X(kRnnRelu, rnn_relu, 1, kMatrix, RnnReluCell)    \
  X(kLeaky, leaky, 1, kMatrix, LeakyCell)           \
  X(kSkip, skip, 1, kPerDelay, SkipCell)            \
  X(kClockwork, clockwork, 1, kMatrix, ClockCell)   \
  X(kIndRnn, indrnn, 1, kVector, IndRnnCell)        \
  /* one line a kind, each ending in a backslash */

// The shape of a cell's weight_hh: [G*H, H], a vector [G*H] (each unit
// recurs only on itself), or one [H, H] per delay (skip).
enum class RecWeight : int { kMatrix, kVector, kPerDelay };

#define RNNCORE_KIND_ENUMERATOR(e, name, gates, rec, type) e,
enum class CellKind : int { RNNCORE_CELL_KINDS(RNNCORE_KIND_ENUMERATOR) };
#undef RNNCORE_KIND_ENUMERATOR
#define RNNCORE_KIND_COUNT(e, name, gates, rec, type) +1
constexpr int kNumCellKinds = 0 RNNCORE_CELL_KINDS(RNNCORE_KIND_COUNT);
#undef RNNCORE_KIND_COUNT

// Limits of a cell's settings, checked by the bindings and exported to
// Python (_core.MAX_DELAY, _core.MAX_STEP): skip's largest delay (its state
// holds that many hidden vectors), clockwork's largest step counter (step +
// T + a period stays far from int64's overflow).
constexpr int64_t kMaxDelay = int64_t(1) << 24;
constexpr int64_t kMaxStep = int64_t(1) << 62;

struct CellSpec {
  CellKind kind = CellKind::kLstm;
  bool peephole = false;            // lstm: weight_ch
  bool reset_after = true;          // gru: r*(W_hn h + b_hn) (true) or W_hn (r*h) (false)
  const int32_t* delays = nullptr;  // skip: distinct delays >= 1, one W_hh each
  int n_delays = 0;
  const int32_t* periods = nullptr; // clockwork: increasing periods of equal unit groups
  int n_periods = 0;
  int64_t step0 = 0;                // clockwork: steps seen before this call
  bool relu = false;                // a cell with a choice of nonlinearity: relu (else tanh)
};

// Skip: the state is the last MaxDelay hidden vectors.
int MaxDelay(const CellSpec& cell);

// Gates per hidden unit in W_ih / W_hh.
int NumGates(const CellSpec& cell);

// The shape of the cell's weight_hh.
RecWeight RecWeightOf(const CellSpec& cell);

// A sequence of rows: row (t, b) starts at p + (t*st + b*sb)*ld and holds the
// row's values contiguously. Time-major: st = B, sb = 1; batch-first: st = 1, sb = T.
template <typename T>
struct Seq {
  T* p = nullptr;
  int64_t ld = 0, st = 0, sb = 0;
  T* Row(int64_t t, int64_t b) const { return p + (t * st + b * sb) * ld; }
};

struct Problem {
  int T = 0, B = 0, I = 0, H = 0;
  bool reverse = false;             // process each row's valid part from its end
  const int32_t* lengths = nullptr; // [B] in [1, T], or null: all rows are T long
  int threads = 1;                  // upper bound on the team; the kernel may use fewer
};

template <typename T>
struct Weights {
  const T* w_ih = nullptr;  // [G*H, I]
  const T* w_hh = nullptr;  // [G*H, H], or [G*H] (RecWeight::kVector)
  const T* b_ih = nullptr;  // [G*H] or null (bias=False)
  const T* b_hh = nullptr;  // [G*H] or null
  const T* w_ch = nullptr;  // [3, H] lstm peepholes (w_i, w_f, w_o) or null
  const T* alpha = nullptr; // [H] leaky: h_t = alpha*h_{t-1} + (1-alpha)*tanh(.)
  const T* const* w_hh_d = nullptr;  // skip: n_delays pointers to [H, H] (w_hh unused)
};

template <typename T>
struct Grads {              // accumulated into (+=)
  T* w_ih = nullptr;
  T* w_hh = nullptr;
  T* b_ih = nullptr;
  T* b_hh = nullptr;
  T* w_ch = nullptr;
  T* alpha = nullptr;
  T* const* w_hh_d = nullptr;
};

// What BPTT needs of a forward pass. Rows are in the input's row order.
template <typename T>
struct Tape {
  T* gates = nullptr;  // [N, G*H] gate activations
  T* hprev = nullptr;  // [N, H] the state each row saw before its step (0 past its length);
                       // skip: [n_delays, N, H], h_{t-d} for each delay
  T* c = nullptr;      // [N, H] lstm: cell state after the step
  T* extra = nullptr;  // [N, H] gru: W_hn h + b_hn (reset_after) or r*h (not)
};

template <typename T>
struct FwdArgs {
  Problem pb;
  CellSpec cell;
  Weights<T> w;
  Seq<const T> x;            // [N, I]
  const T* h0 = nullptr;     // [B, H]; skip: [maxd, B, H] history, newest last
  const T* c0 = nullptr;     // [B, H] lstm
  Seq<T> y;                  // [N, H] slice of the output (ld = D*H)
  T* hn = nullptr;           // [B, H] state after each row's last valid step; skip [maxd, B, H]
  T* cn = nullptr;           // [B, H] lstm
  Tape<T> tape;              // all null for inference
};

template <typename T>
struct BwdArgs {
  Problem pb;
  CellSpec cell;
  Weights<T> w;
  Seq<const T> x;            // [N, I] the forward input
  const T* h0 = nullptr;     // [B, H]
  const T* c0 = nullptr;     // [B, H] lstm
  Tape<T> tape;              // as filled by the forward pass; read only
  Seq<const T> dy;           // [N, H] gradient of the output slice
  const T* dhn = nullptr;    // [B, H] gradient of the final state, or null; skip [maxd, B, H]
  const T* dcn = nullptr;    // [B, H] lstm, or null
  Seq<T> dx;                 // [N, I]
  bool dx_accumulate = false;  // add into dx (second direction) instead of overwriting
  T* dh0 = nullptr;          // [B, H]; skip [maxd, B, H]
  T* dc0 = nullptr;          // [B, H] lstm
  Grads<T> g;
  Seq<T> dh_seq;             // [N, H] slice (ld D*H) or p null: dL/dh_t of every step,
                             // the total gradient reaching h_t (diagnostics)
};

enum class Isa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

struct KernelTable {
  Isa isa;
  const char* name;
  void (*fwd_f32)(const FwdArgs<float>&);
  void (*fwd_f64)(const FwdArgs<double>&);
  void (*bwd_f32)(const BwdArgs<float>&);
  void (*bwd_f64)(const BwdArgs<double>&);
};

}  // namespace rnncore
