// The time loop shared by every cell: input projection as one GEMM (or, for
// batches whose weights stay in cache, inside each step's product: FusedProj),
// per step the packed recurrent product and one fused pass per block of hidden
// units, BPTT with the weight gradients as GEMMs after the loop. Included once per
// instruction set, inside namespace rnncore::RNNCORE_ISA_NS, after vec_<isa>.hpp.
//
// Threads own contiguous blocks of W hidden units (W = vector lanes) with all
// their gates, so a step needs data from other threads only through h_{t-1}
// (forward) or the gate gradients of step t+1 (backward): one barrier a step.

// (Its includes are made by kernels_impl.hpp, outside the ISA namespace.)

template <typename T>
class Buffer {  // 64-byte aligned scratch, freed on scope exit
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(p_); }
  T* Alloc(int64_t n, bool zero = false) {
    std::free(p_);
    p_ = nullptr;
    size_t bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(T);
    bytes = (bytes + 63) / 64 * 64;
    p_ = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!p_) throw std::bad_alloc();
    if (zero) std::memset(p_, 0, bytes);
    return p_;
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

inline int MinI(int a, int b) { return a < b ? a : b; }

// Packed W_hh for the forward product of one thread's unit block:
// out[blk][k][g][lane] = w[(g0 + g)*H + blk*W + lane][k], zero past H.
// Blocks [blk0, blk1) only, each at its place in out (threads pack their own).
template <typename T>
void PackFwd(const T* w, int H, int K, int g0, int ng, T* out, int blk0, int blk1) {
  constexpr int W = Vec<T>::kW, KB = 16;
  // KB columns at a time: each source row is read a line at a time (rows K
  // apart, often a power of two, would otherwise fight over a few L1 sets),
  // and the writes stay within the KB*ng*W outputs of those columns. A full
  // block's lanes go W columns at a time through a register transpose; the
  // rest one by one. Long rows (from memory, not cache) ask for their
  // columns ahead.
  const bool big = K >= 256;
  for (int blk = blk0; blk < blk1; ++blk) {
    T* ob = out + static_cast<int64_t>(blk) * K * ng * W;
    const bool full = (blk + 1) * W <= H;
    for (int k0 = 0; k0 < K; k0 += KB) {
      const int kn = MinI(KB, K - k0);
      for (int g = 0; g < ng; ++g) {
        const T* src0 = w + (static_cast<int64_t>(g0 + g) * H + blk * W) * K + k0;
        T* o = ob + (static_cast<int64_t>(k0) * ng + g) * W;
        // ng*W rows are read side by side, more streams than hardware
        // prefetchers follow: each row asks for its columns 4 steps on.
        if (big && k0 + 4 * KB < K)
          for (int l = 0; l < W && blk * W + l < H; ++l) __builtin_prefetch(src0 + static_cast<int64_t>(l) * K + 4 * KB);
        int kk = 0;
        if (full)
          for (; kk + W <= kn; kk += W) TransposeW(src0 + kk, K, o + static_cast<int64_t>(kk) * ng * W, ng * W);
        for (int l = 0; l < W; ++l) {
          if (blk * W + l < H) {
            const T* src = src0 + static_cast<int64_t>(l) * K;
            for (int c = kk; c < kn; ++c) o[static_cast<int64_t>(c) * ng * W + l] = src[c];
          } else {  // lanes past H (no row there to point at)
            for (int c = kk; c < kn; ++c) o[static_cast<int64_t>(c) * ng * W + l] = T(0);
          }
        }
      }
    }
  }
}

// Packed W_hh for the backward product dh_{t-1} = dG W_hh over rows [m0, m0+M):
// out[blk][m][lane] = w[m0 + m][blk*W + lane], zero past H.
template <typename T>
// Blocks [blk0, blk1) only, each at its place in out.
void PackBwd(const T* w, int H, int m0, int M, T* out, int blk0, int blk1) {
  constexpr int W = Vec<T>::kW;
  out += static_cast<int64_t>(blk0) * M * W;
  for (int blk = blk0; blk < blk1; ++blk)
    for (int m = 0; m < M; ++m)
      for (int l = 0; l < W; ++l) {
        const int j = blk * W + l;
        *out++ = j < H ? w[static_cast<int64_t>(m0 + m) * H + j] : T(0);
      }
}

// Whether InputProj takes unit blocks i, i+1 of [.., b1) as a pair: both full.
template <typename T>
inline bool PairAt(int H, int i, int b1) {
  return i + 1 < b1 && (i + 2) * Vec<T>::kW <= H;
}

// W_ih of a one-gate cell for InputProj, blocks [b0, b1): pairs of full blocks
// as out[k][h][lane] = w[(i + h)*W + lane][k] at block i's place, so that a
// broadcast row value meets two weight vectors (a one-block tile issues a
// load per multiply-add and is bound by the load ports); a block left over is
// packed alone, as PackFwd packs it.
template <typename T>
void PackPairs(const T* w, int H, int K, T* out, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  for (int i = b0; i < b1;) {
    if (PairAt<T>(H, i, b1)) {  // the two blocks as two "gates" W rows apart
      PackFwd(w + static_cast<int64_t>(i) * W * K, W, K, 0, 2, out + static_cast<int64_t>(i) * K * W, 0, 1);
      i += 2;
    } else {
      PackFwd(w, H, K, 0, 1, out, i, i + 1);
      i += 1;
    }
  }
}

// PackBwd for the backward products of block pairs (see PackPairs):
// out[m][u][lane] = w[m0 + m][(i + u)*W + lane] at block i's place.
template <typename T>
void PackBwdPairs(const T* w, int H, int m0, int M, T* out, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  for (int i = b0; i < b1;) {
    if (PairAt<T>(H, i, b1)) {
      T* o = out + static_cast<int64_t>(i) * M * W;
      for (int m = 0; m < M; ++m) {
        const T* src = w + static_cast<int64_t>(m0 + m) * H + static_cast<int64_t>(i) * W;
        for (int l = 0; l < 2 * W; ++l) *o++ = src[l];
      }
      i += 2;
    } else {
      PackBwd(w, H, m0, M, out, i, i + 1);
      i += 1;
    }
  }
}

// acc[r][g] = sum_k rows[r][k] * wp[k][g][:]: R batch rows times G gate vectors
// of one unit block, in registers. With kAdd the products are added to acc.
// Fewer than kChains accumulators would leave the FMA latency exposed (batch
// 1, one gate): K is then split over U partial sums. Eight cover the latency
// of FMAs on operands in L1; a product whose weights stream from L2 once per
// call of several rows may ask for more (skip's batched delays).
template <typename T, int G, int R, bool kAdd = false, int kChains = 8>
inline void Prod(const T* const* rows, int K, const T* wp, Vec<T> (&acc)[R][G]) {
  constexpr int W = Vec<T>::kW;
  constexpr int U = (R * G >= kChains) ? 1 : (kChains + R * G - 1) / (R * G);
  Vec<T> part[U][R][G];
  for (int u = 0; u < U; ++u)
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) part[u][r][g] = Zero<T>();
  int k = 0;
  for (; k + U <= K; k += U)
    for (int u = 0; u < U; ++u) {
      Vec<T> w[G];
      for (int g = 0; g < G; ++g) w[g] = Load(wp + (static_cast<int64_t>(k + u) * G + g) * W);
      for (int r = 0; r < R; ++r) {
        const Vec<T> a = Set1(rows[r][k + u]);
        for (int g = 0; g < G; ++g) part[u][r][g] = Fma(a, w[g], part[u][r][g]);
      }
    }
  for (; k < K; ++k) {
    for (int g = 0; g < G; ++g) {
      const Vec<T> w = Load(wp + (static_cast<int64_t>(k) * G + g) * W);
      for (int r = 0; r < R; ++r) part[0][r][g] = Fma(Set1(rows[r][k]), w, part[0][r][g]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) {
      Vec<T> sum = part[0][r][g];
      for (int u = 1; u < U; ++u) sum = sum + part[u][r][g];
      acc[r][g] = kAdd ? acc[r][g] + sum : sum;
    }
}

// Direct mode, for calls too short to amortise a repack (a streamed step):
// rec[b][m] = sum_k h[b][k] * W_hh[m][k] straight from the row-major W_hh.
// W rows at a time, each with its own accumulator (W independent FMA chains),
// the W sums then made in one shuffle tree (ReduceRows).
template <typename T>
void DirectProd(const T* w, int GH, int H, const T* h, int B, T* rec) {
  constexpr int W = Vec<T>::kW;
  const int hfull = H / W * W, tail = H - hfull;
  for (int b = 0; b < B; ++b) {
    const T* hb = h + static_cast<int64_t>(b) * H;
    T* out = rec + static_cast<int64_t>(b) * GH;
    int m = 0;
    for (; m + W <= GH; m += W) {
      const T* w0 = w + static_cast<int64_t>(m) * H;
      Vec<T> acc[W];
#pragma GCC unroll 16
      for (int r = 0; r < W; ++r) acc[r] = Zero<T>();
      for (int k = 0; k < hfull; k += W) {
        const Vec<T> x = Load(hb + k);
#pragma GCC unroll 16
        for (int r = 0; r < W; ++r) acc[r] = Fma(x, Load(w0 + static_cast<int64_t>(r) * H + k), acc[r]);
      }
      if (tail) {
        const Vec<T> x = LoadN(hb + hfull, tail);
#pragma GCC unroll 16
        for (int r = 0; r < W; ++r)
          acc[r] = Fma(x, LoadN(w0 + static_cast<int64_t>(r) * H + hfull, tail), acc[r]);
      }
      Store(out + m, ReduceRows(acc));
    }
    for (; m < GH; ++m) {
      const T* wm = w + static_cast<int64_t>(m) * H;
      Vec<T> a = Zero<T>();
      for (int k = 0; k < H; k += W) {
        const int n = MinI(W, H - k);
        a = Fma(LoadN(hb + k, n), LoadN(wm + k, n), a);
      }
      out[m] = ReduceAdd(a);
    }
  }
}

// Calls f(r0, integral_constant<R'>) over tiles of R batch rows, the tail with
// its exact size so every tile is a compile-time shape.
template <int K, class F>
inline void TailTile(int rem, int r0, F& f) {
  if constexpr (K >= 1) {
    if (rem == K) f(r0, std::integral_constant<int, K>{});
    else TailTile<K - 1>(rem, r0, f);
  }
}
template <int R, class F>
inline void RowTiles(int B, F&& f) {
  int r0 = 0;
  for (; r0 + R <= B; r0 += R) f(r0, std::integral_constant<int, R>{});
  if (B > r0) TailTile<R - 1>(B - r0, r0, f);
}

// Rows per register tile: G accumulators per row, plus G weight vectors and a
// broadcast, within the ISA's vector registers.
template <int G>
constexpr int TileRows() {
  if (kVecRegs >= 32) return G >= 4 ? 6 : (G == 3 ? 8 : (G == 2 ? 12 : 16));
  return G >= 4 ? 2 : (G == 3 ? 3 : (G == 2 ? 4 : 8));
}
// Rows per tile of the backward products (one gate-vector of outputs).
constexpr int kBwdRows = kVecRegs >= 32 ? 16 : 8;
// ... of PG output vectors (a block, or a pair of blocks).
template <int PG>
constexpr int BwdRows() { return PG == 1 ? kBwdRows : TileRows<PG>(); }

inline int MapT(const Problem& pb, int s, int b) {
  const int len = pb.lengths ? pb.lengths[b] : pb.T;
  if (s >= len) return -1;
  return pb.reverse ? len - 1 - s : s;
}

// Asks the cache for the lines of p[0, n) ahead of their use (write: they
// are about to be stored).
template <typename T>
inline void Ask(const T* p, int64_t n, bool write = false) {
#if defined(__GNUC__)
  const uintptr_t e = reinterpret_cast<uintptr_t>(p + n);
  for (uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63); a < e; a += 64) {
    if (write) __builtin_prefetch(reinterpret_cast<const void*>(a), 1);
    else __builtin_prefetch(reinterpret_cast<const void*>(a));
  }
  // GCC takes a function that only prefetches for a pure one and deletes
  // its calls (no prefetch was left in the kernels): an empty volatile asm
  // is a side effect it keeps, and it emits no instruction.
  asm volatile("");
#else
  (void)p, (void)n, (void)write;
#endif
}

// Whether a call's tapes (n elements of gate rows) outgrow L2, so that the
// rows a step uses must be asked for ahead (AskRows); smaller ones stay
// cached, and asking would only cost instructions (clockwork at
// (200,16,64,64) ran 10% slower with it).
template <typename T>
inline bool AskTapes(int64_t n) { return n * static_cast<int64_t>(sizeof(T)) > Tune().tape_ask_bytes; }

// Asks L2 for the share [from, to) of `of` of the n elements at p: the
// input projection's next K chunk of packed weights, a share per row tile
// of the current chunk. Hardware prefetchers stop at 4 KB pages, and a
// chunk (up to 256 KB) otherwise starts with misses to L3 or memory.
template <typename T>
inline void AskAhead(const T* p, int64_t n, int64_t from, int64_t to, int64_t of) {
#if defined(__GNUC__)
  const char* b = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(T));
  for (int64_t o = bytes * from / of / 64 * 64, e = bytes * to / of; o < e; o += 64)
    __builtin_prefetch(b + o, 0, 2);
  asm volatile("");  // see Ask
#else
  (void)p, (void)n, (void)from, (void)to, (void)of;
#endif
}

// Asks for columns [col, col + len) of ng vectors gstride apart, in rows
// [r0, r0 + R) at step s of a tape: the rows a tile's lanes read or write
// after its product. The tapes were written long before (the projected
// inputs before the time loop, the forward's records before the backward)
// and have left L1 and L2; asked for before the product, their misses
// overlap it instead of stalling the lanes (a fifth of an LSTM forward step
// and a third of its backward step at (100,32,128,256) went there).
template <typename T, typename U>
inline void AskRows(const Seq<U>& seq, const Problem& pb, int s, int r0, int R, int64_t col, int len,
                    int ng = 1, int64_t gstride = 0, bool write = false) {
  if (!seq.p || s < 0) return;
  for (int r = 0; r < R; ++r) {
    const int t = MapT(pb, s, r0 + r);
    if (t < 0) continue;
    const T* row = seq.Row(t, r0 + r) + col;
    for (int q = 0; q < ng; ++q) Ask<T>(row + q * gstride, len, write);
  }
}

// Blocks of units owned by thread tid of a team of nt.
inline void OwnBlocks(int nblk, int tid, int nt, int* b0, int* b1) {
  *b0 = static_cast<int>(static_cast<int64_t>(nblk) * tid / nt);
  *b1 = static_cast<int>(static_cast<int64_t>(nblk) * (tid + 1) / nt);
}

// Ownership by whole block pairs (the first block of a thread even), so that
// block pairs, and with them every result, do not depend on the team size.
inline void OwnPairs(int nblk, int tid, int nt, int* b0, int* b1) {
  OwnBlocks((nblk + 1) / 2, tid, nt, b0, b1);
  *b0 = 2 * *b0;
  *b1 = 2 * *b1 < nblk ? 2 * *b1 : nblk;
}

// Block i of [b0, b1) in the order step s takes them: odd steps from the
// last, so that a step starts on the weights its predecessor read last, still
// in L1 (W_hh a little over L1 is then partly read from it: Elman at
// (100,1,32,128) 0.048 -> 0.037 ms).
inline int StepBlock(int s, int b0, int b1, int i) { return (s & 1) ? b0 + b1 - 1 - i : i; }

// f(blk, integral_constant<PG>) over the blocks [b0, b1): PG = 2 for a pair
// (paired layouts, see PackPairs), else 1. Steps pass back = s & 1 (StepBlock).
// With back, the same blocks and pairs from the last to the first.
template <typename T, class F>
inline void ForUnits(bool paired, int H, int b0, int b1, F&& f, bool back = false) {
  int n = b0;  // pairs cover [b0, n), single blocks [n, b1)
  while (paired && PairAt<T>(H, n, b1)) n += 2;
  if (back) {
    for (int blk = b1 - 1; blk >= n; --blk) f(blk, std::integral_constant<int, 1>{});
    for (int blk = n - 2; blk >= b0; blk -= 2) f(blk, std::integral_constant<int, 2>{});
  } else {
    for (int blk = b0; blk < n; blk += 2) f(blk, std::integral_constant<int, 2>{});
    for (int blk = n; blk < b1; ++blk) f(blk, std::integral_constant<int, 1>{});
  }
}

template <typename T>
void ZeroRow(T* p, int64_t n) { std::memset(p, 0, sizeof(T) * n); }

// Everything a forward step reads or writes.
template <typename T>
struct FwdCtx {
  const FwdArgs<T>* a;
  int H, B;
  int64_t GH;
  Seq<T> gates;            // [N, GH] rows as x: projected inputs, then activations
  Seq<T> hprev, c, extra;  // tape rows (p null for inference)
  const T* bias_x;         // [GH] added to every gate pre-activation
  const T* bias_h;         // [GH] biases kept inside the step (HiddenBias: gru's b_hn)
  const T* wp;             // packed W_hh (all gates, or what the cell packs)
  T* hb[2];                // [B, H] h_{t-1} / h_t by step parity
  T* cb;                   // [B, H] cell state (c0 -> cn: lstm)
  int nblk;                // unit blocks
  bool direct;             // short call: no repack, W_hh read row by row
  bool paired;             // one-gate cell: W_hh packed in block pairs (PackPairs)
  const T* wpx;            // packed W_ih when the steps make x_t W_ih^T (FusedProj), else null
  int I;
  bool ask;                // tapes past L2: prefetch rows (AskFwd, InputProj's AskAhead)
  T* rec;                  // direct: [B, GH] recurrent pre-activations of the step
};

// The rows a forward tile's lanes use at step s, asked for before its
// product (see AskRows): the projected inputs (G vectors: gates H apart, or
// a block pair's two blocks side by side), then the rows the lanes store, y
// and, when training, the tapes.
template <typename T>
[[gnu::noinline]] void AskFwdRows(const FwdCtx<T>& c, int s, int r0, int R, int j0, int n, int G) {
  const Problem& pb = c.a->pb;
  const int len = c.paired ? (G - 1) * Vec<T>::kW + n : n;
  if (c.paired) AskRows<T>(c.gates, pb, s, r0, R, j0, len);
  else AskRows<T>(c.gates, pb, s, r0, R, j0, n, G, c.H);
  AskRows<T>(c.a->y, pb, s, r0, R, j0, len, 1, 0, true);
  AskRows<T>(c.hprev, pb, s, r0, R, j0, len, 1, 0, true);
  AskRows<T>(c.c, pb, s, r0, R, j0, len, 1, 0, true);
  AskRows<T>(c.extra, pb, s, r0, R, j0, len, 1, 0, true);
}
template <typename T>
inline void AskFwd(const FwdCtx<T>& c, int s, int r0, int R, int j0, int n, int G) {
  if (c.ask) AskFwdRows(c, s, r0, R, j0, n, G);  // small calls pay one branch
}

// acc = x_t W_ih^T for R rows (from r0) and G output vectors of the unit
// block (or pair) at j0, when the steps make the input projection (FusedProj).
template <typename T, int G, int R>
inline void StepInputs(const FwdCtx<T>& c, int s, int r0, int j0, Vec<T> (&acc)[R][G]) {
  const T* xr[R];
  for (int r = 0; r < R; ++r) {
    const int t = MapT(c.a->pb, s, r0 + r);  // a finished row's product is dropped
    xr[r] = c.a->x.Row(t < 0 ? 0 : t, r0 + r);
  }
  Prod<T, G, R>(xr, c.I, c.wpx + static_cast<int64_t>(j0) * c.I * (c.GH / c.H), acc);
}

// Row (t, b) of the gates from column j0, or null when there are none (the
// steps made x_t W_ih^T in an inference call).
template <typename T>
inline T* GatesAt(const FwdCtx<T>& c, int t, int b, int j0) {
  return c.gates.p ? c.gates.Row(t, b) + j0 : nullptr;
}

// The input side of a gate's pre-activation, n lanes at offset off: bias b
// plus the projected inputs g from the pass, or b alone when the step made
// x_t W_ih^T into its product (FusedProj; g is then null in inference).
template <typename T>
inline Vec<T> InputSide(const FwdCtx<T>& c, const T* g, const T* b, int64_t off, int n) {
  return c.wpx ? LoadN(b + off, n) : LoadN(g + off, n) + LoadN(b + off, n);
}

// The product part of a forward step for R rows (from r0) and G gates of the
// unit block at j0: the packed recurrent product (after x_t W_ih^T when the
// steps make it), or in direct mode the step's rec rows.
template <typename T, int G, int R>
inline void RecAcc(const FwdCtx<T>& c, int s, const T* const* rows, const T* wp, int r0, int j0, int n,
                   Vec<T> (&acc)[R][G]) {
  if (c.direct) {
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g)
        acc[r][g] = LoadN(c.rec + static_cast<int64_t>(r0 + r) * c.GH + static_cast<int64_t>(g) * c.H + j0, n);
  } else if (c.wpx) {
    AskFwd(c, s, r0, R, j0, n, G);
    StepInputs<T, G, R>(c, s, r0, j0, acc);
    Prod<T, G, R, true>(rows, c.H, wp, acc);
  } else {
    AskFwd(c, s, r0, R, j0, n, G);
    Prod<T, G, R>(rows, c.H, wp, acc);
  }
}

// Whether the steps make the input projection too, as one product over
// [x_t, h_{t-1}] (K = I + H) a step, instead of a pass over all T*B rows
// before the loop: no projected inputs written to memory and read back, and
// the gate functions spread over a longer product. It reads all the packed
// weights every step (wbytes: W_ih and the recurrent ones), so they must
// stay in cache and meet enough rows: a few in L2, more in L3. LSTM
// inference, one thread: (50,64,512,512) 59.6 -> 57.8 ms, (100,32,128,256)
// 12.0 -> 11.7, (200,16,64,64) 1.24 -> 1.15; but (25,48,1024,1024), whose
// 32 MB of weights come from memory each step, 95.8 -> 108.0, and batch 1
// 10% slower. Cells whose inputs enter otherwise (gru's n gate, clockwork's
// blocks) keep the pass (CellBase::kFusedProj).
inline bool FusedProj(int B, int64_t wbytes) {
  const Tuning& tu = Tune();
  if (wbytes <= tu.fused_l2_bytes) return B >= 8;
  return wbytes <= tu.fused_l3_bytes && B >= 32;
}

template <typename T>
struct BwdCtx {
  const BwdArgs<T>* a;
  int H, B;
  int64_t GH;
  Seq<const T> gates, hprev, c, extra;
  Seq<T> dg;               // [N, GH] gate gradients feeding W_hh (and W_ih, unless the cell keeps its own)
  const T* wpb;            // packed W_hh for dh_{t-1}
  bool paired;             // wpb packed in block pairs (PackBwdPairs)
  bool ask;                // tapes past L2: prefetch rows (AskBwd)
  const T* zero;           // [GH] zeros: the product row of a finished batch row
  T* dh;                   // [B, H] carried dh not yet through W_hh
  T* dc;                   // [B, H] carried dc (dcn -> dc0: lstm)
  int nblk;
};

// The rows a backward tile's lanes use at step s, asked for before its
// product (see AskRows): dy, and ng gate vectors of the tape and of dg
// (columns [col, col + len) of each).
template <typename T>
[[gnu::noinline]] void AskBwdRows(const BwdCtx<T>& c, int s, int r0, int R, int64_t col, int len, int ng) {
  const Problem& pb = c.a->pb;
  AskRows<T>(c.a->dy, pb, s, r0, R, col, len);
  AskRows<T>(c.gates, pb, s, r0, R, col, len, ng, c.H);
  AskRows<T>(c.dg, pb, s, r0, R, col, len, ng, c.H, true);
}
template <typename T>
inline void AskBwd(const BwdCtx<T>& c, int s, int r0, int R, int64_t col, int len, int ng) {
  if (c.ask) AskBwdRows(c, s, r0, R, col, len, ng);
}

// Diagnostics: keep the total dL/dh_t of a step when asked to.
template <typename T>
inline void KeepDh(const BwdCtx<T>& c, int t, int b, int j0, int n, Vec<T> dh) {
  if (c.a->dh_seq.p) StoreN(c.a->dh_seq.Row(t, b) + j0, dh, n);
}

// Row pointer into the gate gradients of step s for the backward product,
// or the zero row when batch row b has no step s.
template <typename T>
inline const T* DgRow(const BwdCtx<T>& c, int s, int b, int64_t col) {
  if (s >= c.a->pb.T) return c.zero;
  const int t = MapT(c.a->pb, s, b);
  return t < 0 ? c.zero : c.dg.Row(t, b) + col;
}

// acc[r] = W_hh^T dG_s for R rows from r0 (own unit block packed in wp, K rows
// of W_hh): the part of dL/dh_{s-1} that goes through the recurrent weights;
// zero past the last step.
// PG = 2: a pair of unit blocks (paired layout, see PackBwdPairs).
template <typename T, int PG, int R>
inline void BackProd(const BwdCtx<T>& c, int s, int r0, int K, const T* wp, Vec<T> (&acc)[R][PG]) {
  if (s >= c.a->pb.T) {
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < PG; ++u) acc[r][u] = Zero<T>();
    return;
  }
  const T* rows[R];
  for (int r = 0; r < R; ++r) rows[r] = DgRow(c, s, r0 + r, 0);
  Prod<T, PG, R>(rows, K, wp, acc);
}

// K chunk of the input projection: the packed weights of one chunk of one
// block, a quarter of L2 (Tuning::proj_chunk_bytes), stay in L2 with the row panel's inputs while every row tile
// passes over them (AskAhead brings the next chunk). Chunks of 16 KB, kept
// in L1, measured slower: each chunk of each tile adds its sums into the
// outputs in memory, and at (50,64,512,512) an LSTM's projection then ran
// 15% slower than its recurrent product; whole-K chunks made the LSTM
// inference 8-12% faster at the two largest sizes.
// (Measured on Zen 5, 1 MB L2, with 256 KB chunks.)
template <typename T>
inline int ProjChunk(int G) {
  const int64_t k = Tune().proj_chunk_bytes / static_cast<int64_t>(sizeof(T)) / (G * Vec<T>::kW) / 8 * 8;
  return k < 8 ? 8 : (k > (1 << 20) ? (1 << 20) : static_cast<int>(k));
}

// out[r] (+)= rows[r][k0 : k0+kn] . wp[k0 : k0+kn] for one tile of R rows
// of one unit block: the step of a K-chunked product (add: into out).
template <typename T, int G, int R>
inline void ProjTile(const T* const* rows, int k0, int kn, const T* wp, T* const* outs, int H, int n,
                     bool add) {
  const T* shifted[R];
  for (int r = 0; r < R; ++r) shifted[r] = rows[r] + k0;
  Vec<T> acc[R][G];
  const T* w = wp + static_cast<int64_t>(k0) * G * Vec<T>::kW;
  Prod<T, G, R>(shifted, kn, w, acc);
  if (add)  // after the product: the loaded values need no registers during it
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) acc[r][g] = LoadN(outs[r] + static_cast<int64_t>(g) * H, n) + acc[r][g];
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g) StoreN(outs[r] + static_cast<int64_t>(g) * H, acc[r][g], n);
}


template <typename T>
void FinishDh0(BwdCtx<T>& c, int b0, int b1, int K) {
  constexpr int W = Vec<T>::kW;
  ForUnits<T>(c.paired, c.H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wpb + static_cast<int64_t>(blk) * K * W;
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = DgRow(c, 0, r0 + r, 0);
      Vec<T> acc[R][PG];
      Prod<T, PG, R>(rows, K, wp, acc);
      for (int u = 0; u < PG; ++u) {
        const int j0 = (blk + u) * W, nl = MinI(W, c.H - j0);
        for (int r = 0; r < R; ++r) {
          T* d = c.dh + static_cast<int64_t>(r0 + r) * c.H + j0;
          StoreN(d, LoadN(d, nl) + acc[r][u], nl);
        }
      }
    });
  });
}

// Input projection of all N rows for unit blocks [b0, b1): gates = x W_ih^T,
// rnncore's own kernel rather than BLAS: the same register tiles as the
// recurrent product, and no second thread pool. Rows go in panels, and within
// a panel K in chunks, so that a chunk's packed weights serve the panel's row
// tiles from L1. A tile covers one block (PG = G: its gates, at stride H) or,
// for paired one-gate cells, two blocks packed by PackPairs (PG = 2, stride W).
template <typename T, int G>
void InputProj(const FwdCtx<T>& c, const T* pih, int I, int64_t N, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  const int H = c.H;
  const T* x = c.a->x.p;
  const int64_t ldx = c.a->x.ld;
  auto pass = [&](auto pg_c, int blk, int k0, int kn, int64_t base, int64_t rows_here) {
    constexpr int PG = decltype(pg_c)::value;
    const int j0 = blk * W, n = MinI(W, H - j0), stride = G == 1 ? W : H;
    const T* wp = pih + static_cast<int64_t>(blk) * I * G * W;
    const int64_t cn = static_cast<int64_t>(kn) * PG * W;  // this chunk's packed weights
    const T* wc = wp + static_cast<int64_t>(k0) * PG * W;
    RowTiles<TileRows<PG>()>(static_cast<int>(rows_here), [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      if (c.ask) AskAhead(wc + cn, cn, r0, r0 + R, rows_here);  // the next chunk's, stored after it
      const T* rows[R];
      T* outs[R];
      for (int r = 0; r < R; ++r) {
        rows[r] = x + (base + r0 + r) * ldx;
        outs[r] = c.gates.p + (base + r0 + r) * c.GH + j0;
      }
      ProjTile<T, PG, R>(rows, k0, kn, wp, outs, stride, n, k0 > 0);
    });
  };
  const int KC = ProjChunk<T>(G == 1 ? 2 : G);
  // Over several K chunks, panels of rows whose inputs (P x I) stay in L2
  // while every block's chunks pass over them, so that the outputs, written
  // and read back once per chunk, stay in cache too. With one chunk nothing
  // is read back, and panels would only stream every block's weights again
  // per panel: all rows then form one (LSTM inference at (25,16,1024,1024),
  // 96-row panels: 41.0 ms, one: 38.9).
  // (3/8 of L2: 384 KB on the 1 MB L2 it was measured on.)
  const int64_t fit = Tune().proj_panel_bytes / (static_cast<int64_t>(I) * sizeof(T)) / 48 * 48;
  const int64_t P = I <= KC ? N : (fit < 48 ? 48 : fit);
  for (int64_t p0 = 0; p0 < N; p0 += P) {
    const int64_t pn = N - p0 < P ? N - p0 : P;
    for (int blk = b0; blk < b1;) {
      const bool pair = G == 1 && c.paired && PairAt<T>(H, blk, b1);
      for (int k0 = 0; k0 < I; k0 += KC) {
        const int kn = MinI(KC, I - k0);
        if (pair) pass(std::integral_constant<int, 2>{}, blk, k0, kn, p0, pn);
        else pass(std::integral_constant<int, G>{}, blk, k0, kn, p0, pn);
      }
      blk += pair ? 2 : 1;
    }
  }
}

template <typename T>
Seq<T> TapeSeq(T* p, int64_t ld, const Seq<const T>& like) {
  Seq<T> s;
  s.p = p;
  s.ld = ld;
  s.st = like.st;
  s.sb = like.sb;
  return s;
}

// n elements rounded up to whole 64-byte lines.
template <typename T>
inline int64_t Round64(int64_t n) {
  constexpr int64_t k = 64 / sizeof(T);
  return (n + k - 1) / k * k;
}

// The scratch of a direct-mode call, kept by the calling thread between calls
// so that a streamed step pays no malloc; requests larger than L2
// (Tuning::direct_keep_bytes) are not kept and come from `own`.
template <typename T>
T* DirectScratch(int64_t n, Buffer<T>* own) {
  if (n * static_cast<int64_t>(sizeof(T)) > Tune().direct_keep_bytes) return own->Alloc(n);
  thread_local Buffer<T> kept;
  thread_local int64_t cap = 0;
  if (n > cap) {
    kept.Alloc(n);
    cap = n;
  }
  return kept.get();
}

// Column sums of n rows of a [rows, ld] matrix into out[0..n) (+=).
template <typename T>
void ColSums(const T* m, int64_t rows, int64_t ld, int64_t n, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* p = m + r * ld;
    for (int64_t j = 0; j < n; ++j) out[j] += p[j];
  }
}

// acc[r][g] += sum_k a[k*lda + r] * wp[k][g][:]: Prod for the rows of a
// transposed operand (column r of a k-major matrix), whose R values at one k
// sit side by side; no transposed copy is needed.
template <typename T, int G, int R>
inline void ProdT(const T* a, int64_t lda, int K, const T* wp, Vec<T> (&acc)[R][G]) {
  constexpr int W = Vec<T>::kW;
  for (int k = 0; k < K; ++k, a += lda) {
    Vec<T> w[G];
    for (int g = 0; g < G; ++g) w[g] = Load(wp + (static_cast<int64_t>(k) * G + g) * W);
    for (int r = 0; r < R; ++r) {
      const Vec<T> x = Set1(a[r]);
      for (int g = 0; g < G; ++g) acc[r][g] = Fma(x, w[g], acc[r][g]);
    }
  }
}

// B[k0 .. k0+kn) x [0, n) of a row-major matrix (ldb) packed by column
// blocks for the products below: pairs of full blocks as [kk][u][lane] and a
// block left over as [kk][lane] (zero past n), each at blk * kn * W.
template <typename T>
void PackColPairs(const T* b, int ldb, int kn, int n, T* out) {
  constexpr int W = Vec<T>::kW;
  const int nblk = (n + W - 1) / W;
  for (int i = 0; i < nblk;) {
    const int pg = PairAt<T>(n, i, nblk) ? 2 : 1;
    T* o = out + static_cast<int64_t>(i) * kn * W;
    for (int kk = 0; kk < kn; ++kk) {
      const T* src = b + static_cast<int64_t>(kk) * ldb + static_cast<int64_t>(i) * W;
      const int avail = n - i * W;
      for (int l = 0; l < pg * W; ++l) *o++ = l < avail ? src[l] : T(0);
    }
    i += pg;
  }
}

// C[m, n] = op(A) B + beta C with beta 0 or 1: op(A) = A (m x k, lda) or
// A^T (A stored k x m); B k x n (ldb); all row-major. The weight gradients and
// dx of a sequence, with rnncore's own register tiles (two column blocks per
// broadcast) rather than BLAS: K is taken in chunks, B's chunk packed by
// column blocks (one pair's panel stays in L1) per thread; A^T is read in
// place (ProdT); threads share out the rows of C.
// K chunk of OwnGemm: L2 / 16 of packed B per pair's chunk (Tuning::
// gemm_chunk_bytes). On Zen 5's 1 MB L2, chunks of 16 KB added each chunk's
// sums into C in memory too often (dx at (25,16,1024,1024) has K = 4096),
// chunks of 256 KB, InputProj's, were slower at (50,64,512,512). LSTM
// training steps, one thread: (25,16,1024,1024) 139.8 ms with 16 KB,
// 115.5 with 64 KB; (50,64,512,512) 198.8 and 192.0; 260 with 256 KB.
template <typename T>
inline int OwnGemmChunk() {
  const int64_t k = Tune().gemm_chunk_bytes / static_cast<int64_t>(sizeof(T)) / (2 * Vec<T>::kW) / 8 * 8;
  return k < 8 ? 8 : (k > (1 << 20) ? (1 << 20) : static_cast<int>(k));
}

template <typename T>
void OwnGemm(bool ta, int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c,
             int ldc, int threads) {
  constexpr int W = Vec<T>::kW;
  const int KC = OwnGemmChunk<T>();
  const int nblk = (n + W - 1) / W;
  const bool add_first = beta != T(0);
  const int64_t fmas = static_cast<int64_t>(m) * n * k;
  int nt = threads < 1 ? 1 : threads;
  if (fmas < Tune().team_min_fmas) nt = 1;  // as Gemm: a team only for large products
  if (nt > m) nt = m;
  nt = TeamOrSolo(nt);
  RunTeam(nt, [&](int tid, int nteam) {
    const int m0 = static_cast<int>(static_cast<int64_t>(m) * tid / nteam);
    const int m1 = static_cast<int>(static_cast<int64_t>(m) * (tid + 1) / nteam);
    const int mm = m1 - m0;
    if (mm <= 0) return;
    Buffer<T> bp_buf;
    T* bp = bp_buf.Alloc(static_cast<int64_t>(nblk) * W * KC);
    for (int k0 = 0; k0 < k; k0 += KC) {
      const int kn = MinI(KC, k - k0);
      PackColPairs(b + static_cast<int64_t>(k0) * ldb, ldb, kn, n, bp);
      const bool add = k0 > 0 || add_first;
      ForUnits<T>(true, n, 0, nblk, [&](int blk, auto pg_c) {
        constexpr int PG = decltype(pg_c)::value;
        const T* wp = bp + static_cast<int64_t>(blk) * kn * W;
        const int j0 = blk * W, nl = MinI(W, n - j0);
        RowTiles<TileRows<PG>()>(mm, [&](int r0, auto nr_c) {
          constexpr int R = decltype(nr_c)::value;
          T* outs[R];
          for (int r = 0; r < R; ++r) outs[r] = c + static_cast<int64_t>(m0 + r0 + r) * ldc + j0;
          if (ta) {  // rows of C are columns of A
            Vec<T> acc[R][PG];
            for (int r = 0; r < R; ++r)
              for (int g = 0; g < PG; ++g)
                acc[r][g] = add ? LoadN(outs[r] + static_cast<int64_t>(g) * W, nl) : Zero<T>();
            ProdT<T, PG, R>(a + static_cast<int64_t>(k0) * lda + m0 + r0, lda, kn, wp, acc);
            for (int r = 0; r < R; ++r)
              for (int g = 0; g < PG; ++g) StoreN(outs[r] + static_cast<int64_t>(g) * W, acc[r][g], nl);
          } else {
            const T* rows[R];
            for (int r = 0; r < R; ++r) rows[r] = a + static_cast<int64_t>(m0 + r0 + r) * lda + k0;
            ProjTile<T, PG, R>(rows, 0, kn, wp, outs, W, nl, add);
          }
        });
      });
    }
  });
}

// A product with a few columns: C[m, n] += A^T B for A [k, m] (lda) and
// B [k, n] (ldb), n <= kNarrowCols, and with sums sums[m] += the column sums
// of A, in one pass over A. It is the weight gradient of the input
// projection of a layer with a few input features (dW_ih = dg^T x with
// 1 to 4 features, as in most time series), where OpenBLAS copies all of dg
// into its packed format before a product a tenth of the copy's cost, and
// rnncore's tiles (16 lanes of B a step) compute mostly padding; the bias
// gradient's column sums of dg take the same pass. A [k, m]'s rows are read
// in chunks of about half of L2, each chunk once per block of MV vectors of
// columns; every column of C is made by one thread in one order of k, so
// the result does not depend on the team size. LSTM(2, 64) at T=100, B=50
// (the adding recipe), one thread, by perf's shares of the backward: dW_ih
// and both bias sums 0.75 ms (OpenBLAS's copy 7%, its kernel 2%, two column
// sums 3% of 6.1 ms) -> 0.26 ms (5% of 5.5 ms).
constexpr int kNarrowCols = 4;

template <typename T, int NC, int R>
inline void NarrowTile(const T* a, int lda, int kn, const T* b, int ldb, int n, int m, int v0, T* ct) {
  constexpr int W = Vec<T>::kW;
  Vec<T> acc[NC][R];
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < R; ++r) acc[j][r] = Zero<T>();
  int nl[R];
  for (int r = 0; r < R; ++r) nl[r] = MinI(W, m - (v0 + r) * W);
  for (int kk = 0; kk < kn; ++kk) {
    const T* ar = a + static_cast<int64_t>(kk) * lda + static_cast<int64_t>(v0) * W;
    const T* br = b + static_cast<int64_t>(kk) * ldb;
    Vec<T> x[R];
    for (int r = 0; r < R; ++r) x[r] = LoadN(ar + r * W, nl[r]);
    for (int j = 0; j < NC; ++j) {
      if (j < n) {
        const Vec<T> bj = Set1(br[j]);
        for (int r = 0; r < R; ++r) acc[j][r] = Fma(bj, x[r], acc[j][r]);
      } else {  // the column sums
        for (int r = 0; r < R; ++r) acc[j][r] = acc[j][r] + x[r];
      }
    }
  }
  for (int j = 0; j < NC; ++j)
    for (int r = 0; r < R; ++r) {
      T* o = ct + static_cast<int64_t>(j) * m + static_cast<int64_t>(v0 + r) * W;
      StoreN(o, LoadN(o, nl[r]) + acc[j][r], nl[r]);
    }
}

template <typename T, int NC>
void NarrowCols(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T* ct, int threads) {
  constexpr int W = Vec<T>::kW;
  constexpr int MV = (kVecRegs >= 32 ? 24 : 12) / NC;  // accumulators within the registers
  const int nvec = (m + W - 1) / W;
  int64_t kc = Tune().tape_ask_bytes / 2 / (static_cast<int64_t>(m) * static_cast<int64_t>(sizeof(T)));
  kc = kc < 64 ? 64 : kc;
  const int64_t reads = static_cast<int64_t>(m) * k * NC;
  int nt = threads < 1 ? 1 : threads;
  if (reads < Tune().team_min_fmas) nt = 1;
  if (nt > nvec) nt = nvec;
  nt = TeamOrSolo(nt);
  RunTeam(nt, [&](int tid, int nteam) {
    int v0, v1;
    OwnBlocks(nvec, tid, nteam, &v0, &v1);
    for (int64_t k0 = 0; k0 < k; k0 += kc) {
      const int kn = static_cast<int>(k - k0 < kc ? k - k0 : kc);
      const T* ak = a + k0 * lda;
      const T* bk = b + k0 * ldb;
      RowTiles<MV>(v1 - v0, [&](int r0, auto nr_c) {
        constexpr int R = decltype(nr_c)::value;
        NarrowTile<T, NC, R>(ak, lda, kn, bk, ldb, n, m, v0 + r0, ct);
      });
    }
  });
}

// C[m, n] += A^T B and sums[m] += column sums of A (when sums is not null),
// for n <= kNarrowCols (see kNarrowCols).
template <typename T>
void NarrowGemmT(int m, int n, int k, const T* a, int lda, const T* b, int ldb, T* c, int ldc, T* sums,
                 int threads) {
  if (m <= 0 || k <= 0 || (n <= 0 && !sums)) return;
  const int nc = n + (sums ? 1 : 0);
  Buffer<T> ctbuf;
  T* ct = ctbuf.Alloc(static_cast<int64_t>(nc) * m, true);  // C^T (and the sums) of this call
  switch (nc) {
    case 1: NarrowCols<T, 1>(m, n, k, a, lda, b, ldb, ct, threads); break;
    case 2: NarrowCols<T, 2>(m, n, k, a, lda, b, ldb, ct, threads); break;
    case 3: NarrowCols<T, 3>(m, n, k, a, lda, b, ldb, ct, threads); break;
    case 4: NarrowCols<T, 4>(m, n, k, a, lda, b, ldb, ct, threads); break;
    default: NarrowCols<T, 5>(m, n, k, a, lda, b, ldb, ct, threads); break;
  }
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) c[static_cast<int64_t>(i) * ldc + j] += ct[static_cast<int64_t>(j) * m + i];
  if (sums)
    for (int i = 0; i < m; ++i) sums[i] += ct[static_cast<int64_t>(n) * m + i];
}

inline int CeilLog2(int64_t v) {
  int b = 0;
  while ((int64_t(1) << b) < v) ++b;
  return b;
}

// The backward's large products (alpha 1, beta 0 or 1) by rnncore's tiles
// (OwnGemm) or BLAS. Which is faster depends on the machine (its caches, its
// OpenBLAS kernels) and the shape, so by default the first product of a
// shape class (transpose, type, ISA, threads, m n k to the next power of
// two) is preceded by a trial: both paths make the product of the first K
// rows of the real operands into scratch, three times each in turns, and the
// path with the better best time makes every product of the class for the
// life of the process (results do not depend on the trial: a class's
// products all take one path). The trial's K is whole OwnGemm chunks and
// about 2^28 multiply-adds (capped at the product's), so that both paths meet
// their steady state: once per class, the trial costs up to six products of
// the class (small ones, made whole) or the time of about 2^31 multiply-adds.
// RNNCORE_GEMM (SetGemmPath) forces one path.
template <typename T>
bool UseOwnGemm(bool ta, int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, int threads) {
  if (k <= 0 || !(beta == T(0) || beta == T(1))) return false;
  const GemmPath path = GetGemmPath();
  if (path != GemmPath::kAuto) return path == GemmPath::kOwn;
  if (!BlasBound()) return true;  // the fallback loops are no match
  if (Vec<T>::kW < 4) return false;  // no vector tiles to speak of
  char key[160];
  std::snprintf(key, sizeof(key), "%s %s %s m=2^%d n=2^%d k=2^%d threads=%d", RNNCORE_ISA_NAME,
                sizeof(T) == 4 ? "f32" : "f64", ta ? "A^T B" : "A B", CeilLog2(m), CeilLog2(n),
                CeilLog2(k), threads);
  const int seen = LookupGemmChoice(key);
  if (seen >= 0) return seen == 0;
  const int64_t kc = OwnGemmChunk<T>(), mn = static_cast<int64_t>(m) * n;
  int64_t kt = ((int64_t(1) << 28) / (mn > 0 ? mn : 1) + kc - 1) / kc * kc;
  if (kt > k) kt = k;
  Buffer<T> scratch;
  T* cs = scratch.Alloc(mn, true);
  double own_ns = 1e300, blas_ns = 1e300;
  for (int rep = 0; rep < 3; ++rep) {
    const bool own_first = rep % 2 == 0;  // neither always meets B warm
    for (int side = 0; side < 2; ++side) {
      const bool own = (side == 0) == own_first;
      const int64_t t0 = SteadyNanos();
      if (own) OwnGemm<T>(ta, m, n, static_cast<int>(kt), a, lda, b, ldb, beta, cs, n, threads);
      else Gemm<T>(ta, false, m, n, static_cast<int>(kt), T(1), a, lda, b, ldb, beta, cs, n, threads);
      const double ns = static_cast<double>(SteadyNanos() - t0);
      double& best = own ? own_ns : blas_ns;
      best = ns < best ? ns : best;
    }
  }
  RecordGemmChoice(key, own_ns, blas_ns);
  return LookupGemmChoice(key) == 0;
}

template <typename T>
void BigGemm(bool ta, int m, int n, int k, const T* a, int lda, const T* b, int ldb, T beta, T* c,
             int ldc, int threads) {
  if (UseOwnGemm<T>(ta, m, n, k, a, lda, b, ldb, beta, threads))
    OwnGemm<T>(ta, m, n, k, a, lda, b, ldb, beta, c, ldc, threads);
  else
    Gemm<T>(ta, false, m, n, k, T(1), a, lda, b, ldb, beta, c, ldc, threads);
}

#include "rnncore/cells/base.hpp"
#include "rnncore/cells/rnn.hpp"
#include "rnncore/cells/lstm.hpp"
#include "rnncore/cells/gru.hpp"
#include "rnncore/cells/leaky.hpp"
#include "rnncore/cells/skip.hpp"
#include "rnncore/cells/clockwork.hpp"
#include "rnncore/cells/indrnn.hpp"

// One forward pass of one direction of one layer, for cell type C: the
// input projection, the weights packed once, the time loop over a team of
// threads and the final state. What differs between cells is C's (see
// cells/base.hpp); nothing here asks which cell it runs.
template <class C, typename T>
void ForwardCell(const FwdArgs<T>& a) {
  constexpr int W = Vec<T>::kW;
  constexpr int G = C::kGates;
  const Problem& pb = a.pb;
  const int H = pb.H, B = pb.B, I = pb.I, Tn = pb.T;
  const int64_t GH = static_cast<int64_t>(G) * H, N = static_cast<int64_t>(Tn) * B;
  const int64_t BH = static_cast<int64_t>(B) * H;
  const bool train = a.tape.gates != nullptr;
  const int nblk = (H + W - 1) / W;
  const int64_t pblock = static_cast<int64_t>(nblk) * H * W;  // one packed [H, H]
  const int rec_mats = C::RecMats(a.cell);

  // A call too short to amortise repacking W_hh (a streamed step) reads the
  // weights as they are, row by row, and skips BLAS for its few rows.
  const bool direct = C::kDirect && B <= Tune().direct_max_batch && N <= Tune().direct_max_rows;

  // Scratch: gates (inference), biases, the direct product, the state. A
  // direct call takes it from its thread's kept region (no malloc a step).
  const int64_t wbytes = (GH * I + rec_mats * static_cast<int64_t>(H) * H) * sizeof(T);
  const bool fused = !direct && C::kFusedProj && FusedProj(B, wbytes);
  const int64_t n_gates = (train || fused) ? 0 : Round64<T>(N * GH), n_bias = Round64<T>(2 * GH);
  const int64_t n_rec = direct ? Round64<T>(B * GH) : 0, n_state = Round64<T>(C::StateScratch(BH));
  Buffer<T> scratch_own;
  FwdBufs<T> bufs;
  T* scratch = direct ? DirectScratch<T>(n_gates + n_bias + n_rec + n_state, &scratch_own)
                      : scratch_own.Alloc(n_gates + n_bias + n_rec + n_state);
  typename C::FwdContext c{};
  c.direct = direct;
  c.paired = C::Paired(a.cell, direct);
  c.a = &a;
  c.H = H;
  c.B = B;
  c.GH = GH;
  c.nblk = nblk;
  c.gates = TapeSeq<T>(train ? a.tape.gates : (fused ? nullptr : scratch), GH, a.x);
  c.I = I;
  c.ask = AskTapes<T>(N * GH);
  c.hprev = TapeSeq<T>(a.tape.hprev, H, a.x);
  c.c = TapeSeq<T>(a.tape.c, H, a.x);
  c.extra = TapeSeq<T>(a.tape.extra, H, a.x);
  C::Setup(c, a);

  // Biases: b_hh folds into the input side unless the cell keeps it inside.
  T* bx = scratch + n_gates;
  T* bh = bx + GH;
  for (int64_t m = 0; m < GH; ++m) {
    const bool inside = C::HiddenBias(a.cell, m, H);
    bx[m] = (a.w.b_ih ? a.w.b_ih[m] : T(0)) + (a.w.b_hh && !inside ? a.w.b_hh[m] : T(0));
    bh[m] = (a.w.b_hh && inside) ? a.w.b_hh[m] : T(0);
  }
  c.bias_x = bx;
  c.bias_h = bh;

  // 1. The input projection of all N rows at once.
  if (c.direct) {
    for (int t = 0; t < Tn; ++t)
      for (int b = 0; b < B; ++b)
        DirectProd(a.w.w_ih, static_cast<int>(GH), I, a.x.Row(t, b), 1, c.gates.Row(t, b));
  }
  Buffer<T> packih;  // otherwise done by the team below, with W_ih packed once
  if (!c.direct) packih.Alloc(static_cast<int64_t>(nblk) * I * G * W);
  if (fused) c.wpx = packih.get();

  // 2. The recurrent weights repacked once for this call (unless direct), each
  // thread packing the unit blocks it owns (pack_own, in the team below).
  if (c.direct) c.rec = scratch + n_gates + n_bias;
  else C::ClaimPacks(c, a, bufs, pblock);
  auto pack_own = [&](int b0, int b1, int i0, int i1) {  // W_hh's blocks [b0, b1), W_ih's [i0, i1)
    if (c.paired) PackPairs(a.w.w_ih, H, I, packih.get(), i0, i1);
    else PackFwd(a.w.w_ih, H, I, 0, G, packih.get(), i0, i1);
    C::PackRec(c, a, bufs, pblock, b0, b1);
  };

  // Rows past their length: y is 0 there and the tape holds zeros.
  if (pb.lengths) {
    const int tapes = C::HprevTapes(a.cell);
    for (int b = 0; b < B; ++b)
      for (int t = pb.lengths[b]; t < Tn; ++t) {
        ZeroRow(a.y.Row(t, b), H);
        for (int q = 0; train && q < tapes; ++q) ZeroRow(c.hprev.Row(t, b) + q * N * H, H);  // tapes N*H apart
        if (train && c.extra.p) ZeroRow(c.extra.Row(t, b), H);
      }
  }

  // The working state (h by step parity and c, or the cell's own).
  C::InitState(c, a, bufs, scratch + n_gates + n_bias + n_rec);

  const int nt = c.direct ? 1 : ChooseTeam(pb.threads, nblk, C::StepWork(a.cell, pb));
  RunTeam(nt, [&](int tid, int nteam) {
    StepTeam team;
    team.tid = tid;
    team.nteam = nteam;
    C::Own(c, a, team);
    C::Prologue(c, a, packih.get(), fused, pack_own, team);
    for (int s = 0; s < Tn; ++s) {
      const T* hp = c.hb[s & 1];
      T* hc = c.hb[(s + 1) & 1];
      if (c.direct) DirectProd(a.w.w_hh, static_cast<int>(GH), H, hp, B, c.rec);
      C::FwdStep(c, s, team, hp, hc);
      if constexpr (!C::kUnitsApart) Barrier(nteam);
    }
  });
  C::FinalState(c, a);
}

// One backward pass (BPTT) of one direction of one layer, for cell type C:
// the carried gradients through the time loop on a team, then the weight
// gradients, dx and the bias gradients as large products over all rows.
template <class C, typename T>
void BackwardCell(const BwdArgs<T>& a) {
  constexpr int W = Vec<T>::kW;
  constexpr int G = C::kGates;
  const Problem& pb = a.pb;
  const int H = pb.H, B = pb.B, Tn = pb.T;
  const int64_t GH = static_cast<int64_t>(G) * H, N = static_cast<int64_t>(Tn) * B;
  const int nblk = (H + W - 1) / W;
  const int64_t BH = static_cast<int64_t>(B) * H;
  const int64_t pblock = static_cast<int64_t>(nblk) * H * W;

  BwdBufs<T> bufs;
  typename C::BwdContext c{};
  c.a = &a;
  c.H = H;
  c.B = B;
  c.GH = GH;
  c.nblk = nblk;
  c.paired = C::BwdPaired();
  C::SetupBwd(c, a);
  c.gates = TapeSeq<const T>(a.tape.gates, GH, a.x);
  c.ask = AskTapes<T>(N * GH);
  c.hprev = TapeSeq<const T>(a.tape.hprev, H, a.x);
  c.c = TapeSeq<const T>(a.tape.c, H, a.x);
  c.extra = TapeSeq<const T>(a.tape.extra, H, a.x);
  // Rows past a batch row's length keep zero gradients: zero everything once.
  const bool zero_fill = pb.lengths != nullptr;
  c.dg = TapeSeq<T>(bufs.dg.Alloc(N * GH, zero_fill), GH, a.x);
  // W_hh repacked for the backward product, each thread its own unit blocks
  C::ClaimBwd(c, a, bufs, pblock, zero_fill);

  T* st = bufs.state.Alloc(2 * BH + GH, true);
  c.dh = st;
  c.dc = st + BH;
  c.zero = st + 2 * BH;
  C::BwdInitState(c, a);
  if (a.dcn) std::memcpy(c.dc, a.dcn, sizeof(T) * BH);

  const int nt = ChooseTeam(pb.threads, nblk, C::StepWork(a.cell, pb));
  RunTeam(nt, [&](int tid, int nteam) {
    StepTeam team;
    team.tid = tid;
    team.nteam = nteam;
    C::OwnBwd(c, a, team);
    C::PackBwdOwn(c, a, bufs, pblock, team);  // read by this thread only (its unit blocks)
    for (int s = Tn - 1; s >= 0; --s) {
      C::BwdStep(c, s, team);
      if constexpr (!C::kUnitsApart) Barrier(nteam);
    }
    C::FinishDh0Team(c, team);  // the gradient of the initial state
  });
  C::BwdFinalState(c, a);
  if (a.dc0) std::memcpy(a.dc0, c.dc, sizeof(T) * BH);

  // Weight gradients, dx and biases as large products over all N rows; the
  // biases' sums may use c.zero's GH zeros, read no more.
  C::InputGrads(c, a, bufs, st + 2 * BH);
  C::RecGrads(c, a);
  C::FinishGrads(c, a);
}

// The cell type of a kind, from api.hpp's list: f gets a value of the type
// (an empty struct); a cell with variants picks one in its With.
template <typename T, class F>
void WithCell(const CellSpec& cell, F&& f) {
  switch (cell.kind) {
#define RNNCORE_KIND_CELL(e, name, gates, rec, type) \
  case CellKind::e:                                  \
    return type<T>::With(cell, f);
    RNNCORE_CELL_KINDS(RNNCORE_KIND_CELL)
#undef RNNCORE_KIND_CELL
  }
}

template <typename T>
void Forward(const FwdArgs<T>& a) {
  WithCell<T>(a.cell, [&](auto cell) { ForwardCell<decltype(cell)>(a); });
}

template <typename T>
void Backward(const BwdArgs<T>& a) {
  WithCell<T>(a.cell, [&](auto cell) { BackwardCell<decltype(cell)>(a); });
}

