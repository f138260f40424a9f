// Clockwork RNN (Koutnik et al. 2014): H units in equal groups, group i with
// period T_i updates only at steps with (step0 + s) mod T_i == 0 and reads the
// groups of period >= its own. Blocks whose groups all rest cost no product.

// The contexts: the driver's and the units per group.
template <typename T>
struct ClockFwdCtx : FwdCtx<T> {
  int gs;
};
template <typename T>
struct ClockBwdCtx : BwdCtx<T> {
  int gs;
};

inline bool ClockActive(const CellSpec& cell, int group, int s) {
  return (cell.step0 + s) % cell.periods[group] == 0;
}

// What a split of the unit blocks over a team balances (ClockOwnBlocks).
enum class ClockPart { kSteps, kInputs, kBackward };

// Work of the unit block blk, on average over the clock: a forward step
// makes its product over the groups it reads (from its own on) when its
// group updates, plus the pass every step makes over the block; the input
// projection, its input rows of the steps where it updates; a backward step,
// the rows of the groups that read it, plus the pass.
inline double ClockBlockCost(const CellSpec& cell, int H, int I, int gs, int W, int blk, ClockPart part) {
  const int grp = MinI(blk * W, H - 1) / gs;
  switch (part) {
    case ClockPart::kSteps:
      return 2.0 * W + static_cast<double>(H - grp * gs) * W / cell.periods[grp];
    case ClockPart::kInputs:
      return static_cast<double>(I) * W / cell.periods[grp];
    case ClockPart::kBackward:
      break;
  }
  double cost = 2.0 * W;
  for (int j = 0; j <= grp; ++j) cost += static_cast<double>(gs) * W / cell.periods[j];
  return cost;
}

// Clockwork's unit blocks differ in work by far (fast groups update every
// step and read more groups): thread tid gets a contiguous range of about
// equal total ClockBlockCost. The forward splits its steps and its input
// projection each by their own cost, with a barrier between them: one split
// for both left the threads' steps unequal, and with a barrier every step
// the slower thread sets the pace.
inline void ClockOwnBlocks(const CellSpec& cell, int H, int I, int gs, int W, int nblk, ClockPart part,
                           int tid, int nt, int* b0, int* b1) {
  double total = 0;
  for (int blk = 0; blk < nblk; ++blk) total += ClockBlockCost(cell, H, I, gs, W, blk, part);
  const double lo = total * tid / nt, hi = total * (tid + 1) / nt;
  double acc = 0;
  *b0 = nblk;
  *b1 = nblk;
  for (int blk = 0; blk < nblk; ++blk) {  // a block goes to the thread its middle falls in
    const double cost = ClockBlockCost(cell, H, I, gs, W, blk, part);
    const double mid = acc + cost / 2;
    if (mid >= lo && *b0 == nblk) *b0 = blk;
    if (mid >= hi) {
      *b1 = blk;
      break;
    }
    acc += cost;
  }
  if (tid == nt - 1) *b1 = nblk;
  if (*b1 < *b0) *b1 = *b0;
}

// Whether a team's steps share out every group's blocks (ClockForShares)
// rather than split the blocks by average cost (ClockOwnBlocks). With each
// group shared, the threads' work is equal at every step, whichever groups
// update at it; the split by average cost gives one thread most of the fast
// group, which then works alone at the steps where only it updates (periods
// 1, 2, 4, 8 on two threads: 1.5x at best, 1.49-1.56 measured). It needs two
// blocks a thread in every group; smaller groups keep the split by cost.
// The end of the run of blocks from s0 on whose first units share a group.
inline int ClockGroupRunEnd(int gs, int W, int nblk, int s0) {
  int s1 = s0 + 1;
  while (s1 < nblk && s1 * W / gs == s0 * W / gs) ++s1;
  return s1;
}

inline bool ClockSharesGroups(int gs, int W, int nblk, int nt) {
  if (nt <= 1) return false;
  for (int s0 = 0, s1; s0 < nblk; s0 = s1) {
    s1 = ClockGroupRunEnd(gs, W, nblk, s0);
    if (s1 - s0 < 2 * nt) return false;
  }
  return true;
}

// f(r0, r1) over thread tid's unit blocks: its share of each group's run of
// blocks (a block goes with the group of its first unit), or [b0, b1).
template <class F>
inline void ClockForShares(bool by_group, int gs, int W, int nblk, int tid, int nt, int b0, int b1, F&& f) {
  if (!by_group) {
    f(b0, b1);
    return;
  }
  for (int s0 = 0, s1; s0 < nblk; s0 = s1) {
    s1 = ClockGroupRunEnd(gs, W, nblk, s0);
    const int len = s1 - s0, r0 = s0 + len * tid / nt, r1 = s0 + len * (tid + 1) / nt;
    if (r1 > r0) f(r0, r1);
  }
}

// 1/0 per lane of the unit block at j0: is that unit's group updated at step s?
template <typename T>
inline bool ClockMask(const CellSpec& cell, int gs, int j0, int n, int s, Vec<T>* m) {
  alignas(64) T lanes[Vec<T>::kW] = {};
  bool any = false;
  for (int l = 0; l < n;) {  // one modulo per group the block touches, not per lane
    const int grp = (j0 + l) / gs;
    const int end = MinI(n, (grp + 1) * gs - j0);
    const bool on = ClockActive(cell, grp, s);
    for (; l < end; ++l) lanes[l] = on ? T(1) : T(0);
    any = any || on;
  }
  *m = Load(lanes);
  return any;
}

// Does any unit of the block at j0 (n lanes) update at step s?
inline bool ClockBlockActive(const CellSpec& cell, int gs, int j0, int n, int s) {
  for (int grp = j0 / gs; grp * gs < j0 + n; ++grp)
    if (ClockActive(cell, grp, s)) return true;
  return false;
}

// The input projection of a forward pass, only where a block updates: step s
// is time t for every row, and ClockFwdStep reads a block's projection only
// at steps where one of its units updates (resting rows are left unset). Time
// major, each run of updating steps is one range of rows, tiled as
// InputProj tiles all of them (a block that always updates gets the very
// same sums).
template <typename T>
void ClockInputProj(const ClockFwdCtx<T>& c, const T* pih, int I, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  const int H = c.H, Tn = c.a->pb.T, B = c.B;
  const Seq<const T>& x = c.a->x;
  const bool time_major = x.sb == 1;  // rows t*B + b, else b*T + t
  const int KC = ProjChunk<T>(1);  // K chunks as InputProj takes them
  for (int k0 = 0; k0 < I; k0 += KC) {
  const int kn = MinI(KC, I - k0);
  for (int blk = b0; blk < b1; ++blk) {
    const int j0 = blk * W, n = MinI(W, H - j0);
    const T* wp = pih + static_cast<int64_t>(blk) * I * W;
    // count rows; row_of(i) is the i-th one's row index (x and gates share the layout)
    auto tiles = [&](int64_t count, auto row_of) {
      for (int64_t base = 0; base < count; base += 1 << 20) {
        const int here = static_cast<int>(count - base < (1 << 20) ? count - base : (1 << 20));
        RowTiles<TileRows<1>()>(here, [&](int r0, auto nr_c) {
          constexpr int R = decltype(nr_c)::value;
          const T* rows[R];
          T* outs[R];
          for (int r = 0; r < R; ++r) {
            rows[r] = x.p + row_of(base + r0 + r) * x.ld;
            outs[r] = c.gates.p + row_of(base + r0 + r) * c.gates.ld + j0;
          }
          ProjTile<T, 1, R>(rows, k0, kn, wp, outs, H, n, k0 > 0);
        });
      }
    };
    for (int t0 = 0; t0 < Tn;) {
      if (!ClockBlockActive(c.a->cell, c.gs, j0, n, t0)) {
        ++t0;
        continue;
      }
      int t1 = t0 + 1;
      while (t1 < Tn && ClockBlockActive(c.a->cell, c.gs, j0, n, t1)) ++t1;
      if (t0 == 0 && t1 == Tn) {  // always updating: every row in memory order
        tiles(static_cast<int64_t>(Tn) * B, [](int64_t i) { return i; });
      } else if (time_major) {
        const int64_t first = static_cast<int64_t>(t0) * B;
        tiles(static_cast<int64_t>(t1 - t0) * B, [first](int64_t i) { return first + i; });
      } else {
        for (int t = t0; t < t1; ++t)
          tiles(B, [t, Tn](int64_t i) { return t + i * Tn; });
      }
      t0 = t1;
    }
  }
  }
}

template <typename T>
void ClockFwdStep(ClockFwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H, gs = c.gs;
  for (int blk = b0; blk < b1; ++blk) {
    const int j0 = blk * W, n = MinI(W, H - j0);
    V m;
    const bool any = ClockMask(c.a->cell, gs, j0, n, s, &m);
    // groups below the block's first unit are never read (zero blocks)
    const int k0 = any ? (j0 / gs) * gs : H;
    const T* wp = c.wp + static_cast<int64_t>(blk) * H * W + static_cast<int64_t>(k0) * W;
    RowTiles<TileRows<1>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      AskFwd(c, s, r0, R, j0, n, 1);
      V acc[R][1];
      if (any) {
        const T* rows[R];
        for (int r = 0; r < R; ++r) rows[r] = hp + static_cast<int64_t>(r0 + r) * H + k0;
        Prod<T, 1, R>(rows, H - k0, wp, acc);
      } else {
        for (int r = 0; r < R; ++r) acc[r][0] = Zero<T>();
      }
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        const int t = MapT(c.a->pb, s, b);
        const V hpv = LoadN(hp + o, n);
        if (t < 0) {
          StoreN(hc + o, hpv, n);
          continue;
        }
        T* g = c.gates.Row(t, b) + j0;
        V h = hpv;
        if (any) h = Select(m, Tanh(LoadN(g, n) + LoadN(c.bias_x + j0, n) + acc[r][0]), hpv);
        StoreN(hc + o, h, n);
        StoreN(c.a->y.Row(t, b) + j0, h, n);
        if (c.hprev.p) {
          StoreN(g, h, n);
          StoreN(c.hprev.Row(t, b) + j0, hpv, n);
        }
      }
    });
  }
}

// dh_{s-1} (own units) += W_hh^T dpre_s over the groups updated at step s.
template <typename T, int R>
inline void ClockBackProd(const ClockBwdCtx<T>& c, int s, int r0, int blk, Vec<T> (&acc)[R][1]) {
  constexpr int W = Vec<T>::kW;
  for (int r = 0; r < R; ++r) acc[r][0] = Zero<T>();
  if (s >= c.a->pb.T) return;
  const int gs = c.gs;
  for (int grp = 0; grp < c.a->cell.n_periods; ++grp) {
    if (!ClockActive(c.a->cell, grp, s)) continue;
    const T* rows[R];
    for (int r = 0; r < R; ++r) rows[r] = DgRow(c, s, r0 + r, static_cast<int64_t>(grp) * gs);
    const T* wp = c.wpb + static_cast<int64_t>(blk) * c.H * W + static_cast<int64_t>(grp) * gs * W;
    Prod<T, 1, R, true>(rows, gs, wp, acc);
  }
}

template <typename T>
void ClockBwdStep(ClockBwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  const V one = Set1(T(1));
  for (int blk = b0; blk < b1; ++blk) {
    const int j0 = blk * W, n = MinI(W, H - j0);
    V m;
    ClockMask(c.a->cell, c.gs, j0, n, s, &m);
    RowTiles<kBwdRows>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      AskBwd(c, s, r0, R, j0, n, 1);
      V acc[R][1];
      ClockBackProd<T, R>(c, s + 1, r0, blk, acc);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        const V dh = LoadN(c.a->dy.Row(t, b) + j0, n) + LoadN(c.dh + o, n) + acc[r][0];
        KeepDh(c, t, b, j0, n, dh);
        const V h = LoadN(c.gates.Row(t, b) + j0, n);
        // resting units pass dh straight to h_{t-1}
        StoreN(c.dg.Row(t, b) + j0, Select(m, dh * (one - h * h), Zero<T>()), n);
        StoreN(c.dh + o, Select(m, Zero<T>(), dh), n);
      }
    });
  }
}

template <typename T>
void ClockFinishDh0(ClockBwdCtx<T>& c, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  for (int blk = b0; blk < b1; ++blk) {
    const int j0 = blk * W, nl = MinI(W, c.H - j0);
    RowTiles<kBwdRows>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      Vec<T> acc[R][1];
      ClockBackProd<T, R>(c, 0, r0, blk, acc);
      for (int r = 0; r < R; ++r) {
        T* d = c.dh + static_cast<int64_t>(r0 + r) * c.H + j0;
        StoreN(d, LoadN(d, nl) + acc[r][0], nl);
      }
    });
  }
}

// Zero the entries of a packed copy (blocks [blk0, blk1)) that the block structure disallows:
// row unit j may read unit k only if group(k) >= group(j).
template <typename T>
void ClockMaskPackedFwd(T* wp, int H, int gs, int blk0, int blk1) {  // layout [blk][k][lane]
  constexpr int W = Vec<T>::kW;
  for (int blk = blk0; blk < blk1; ++blk)
    for (int l = 0; l < W && blk * W + l < H; ++l) {
      const int k_end = (blk * W + l) / gs * gs;  // the groups below unit j's
      for (int k = 0; k < k_end; ++k) wp[(static_cast<int64_t>(blk) * H + k) * W + l] = T(0);
    }
}
template <typename T>
void ClockMaskPackedBwd(T* wp, int H, int gs, int blk0, int blk1) {  // [blk][m][lane], lane = unit k
  constexpr int W = Vec<T>::kW;
  for (int blk = blk0; blk < blk1; ++blk)
    for (int l = 0; l < W && blk * W + l < H; ++l) {
      const int m_begin = ((blk * W + l) / gs + 1) * gs;  // the groups above unit k's
      for (int m = m_begin; m < H; ++m) wp[(static_cast<int64_t>(blk) * H + m) * W + l] = T(0);
    }
}

// The cell type (cells/base.hpp): block-triangular W_hh, blocks owned by
// cost, and the input projection made by block.
template <typename T>
struct ClockCell : CellBase<ClockCell<T>, T> {
  using FwdContext = ClockFwdCtx<T>;
  using BwdContext = ClockBwdCtx<T>;
  static constexpr bool kFusedProj = false;
  static bool Paired(const CellSpec&, bool) { return false; }  // masks are per block
  static void Setup(ClockFwdCtx<T>& c, const FwdArgs<T>& a) { c.gs = c.H / a.cell.n_periods; }
  static void PackRec(const ClockFwdCtx<T>& c, const FwdArgs<T>& a, FwdBufs<T>& bf, int64_t, int b0, int b1) {
    PackFwd(a.w.w_hh, c.H, c.H, 0, 1, bf.pack.get(), b0, b1);
    ClockMaskPackedFwd(bf.pack.get(), c.H, c.gs, b0, b1);
  }
  static void Own(const ClockFwdCtx<T>& c, const FwdArgs<T>& a, StepTeam& t) {
    ClockOwnBlocks(a.cell, c.H, a.pb.I, c.gs, Vec<T>::kW, c.nblk, ClockPart::kSteps, t.tid, t.nteam, &t.b0, &t.b1);
    t.mode = ClockSharesGroups(c.gs, Vec<T>::kW, c.nblk, t.nteam);
  }
  // Packing (the same for every block), input projection and steps differ
  // in how their work spreads over the blocks: in a team each is split by
  // its own, with barriers between (ClockOwnBlocks).
  template <class PackOwn>
  static void Prologue(const ClockFwdCtx<T>& c, const FwdArgs<T>& a, const T* packih, bool, PackOwn&& pack_own,
                       const StepTeam& t) {
    const bool by_block = !a.pb.reverse;  // ClockInputProj
    const int I = a.pb.I;
    if (t.nteam > 1) {
      int p0, p1, i0, i1;
      OwnBlocks(c.nblk, t.tid, t.nteam, &p0, &p1);
      pack_own(p0, p1, p0, p1);
      Barrier(t.nteam);
      ClockOwnBlocks(a.cell, c.H, I, c.gs, Vec<T>::kW, c.nblk, ClockPart::kInputs, t.tid, t.nteam, &i0, &i1);
      if (by_block) ClockInputProj(c, packih, I, i0, i1);
      else InputProj<T, 1>(c, packih, I, static_cast<int64_t>(a.pb.T) * a.pb.B, i0, i1);
      Barrier(t.nteam);
    } else {
      pack_own(t.b0, t.b1, t.b0, t.b1);
      if (by_block) ClockInputProj(c, packih, I, t.b0, t.b1);
      else InputProj<T, 1>(c, packih, I, static_cast<int64_t>(a.pb.T) * a.pb.B, t.b0, t.b1);
    }
  }
  static void FwdStep(ClockFwdCtx<T>& c, int s, const StepTeam& t, const T* hp, T* hc) {
    ClockForShares(t.mode != 0, c.gs, Vec<T>::kW, c.nblk, t.tid, t.nteam, t.b0, t.b1,
                   [&](int r0, int r1) { ClockFwdStep(c, s, r0, r1, hp, hc); });
  }
  static bool BwdPaired() { return false; }
  static void SetupBwd(ClockBwdCtx<T>& c, const BwdArgs<T>& a) { c.gs = c.H / a.cell.n_periods; }
  static void PackBwdRec(const ClockBwdCtx<T>& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t, int b0, int b1) {
    PackBwd(a.w.w_hh, c.H, 0, static_cast<int>(c.GH), bf.pack.get(), b0, b1);
    ClockMaskPackedBwd(bf.pack.get(), c.H, c.gs, b0, b1);
  }
  static void OwnBwd(const ClockBwdCtx<T>& c, const BwdArgs<T>& a, StepTeam& t) {
    ClockOwnBlocks(a.cell, c.H, a.pb.I, c.gs, Vec<T>::kW, c.nblk, ClockPart::kBackward, t.tid, t.nteam, &t.b0,
                   &t.b1);
    t.mode = ClockSharesGroups(c.gs, Vec<T>::kW, c.nblk, t.nteam);
  }
  template <class F>
  static void ForShares(const ClockBwdCtx<T>& c, const StepTeam& t, F&& f) {
    ClockForShares(t.mode != 0, c.gs, Vec<T>::kW, c.nblk, t.tid, t.nteam, t.b0, t.b1, f);
  }
  static void PackBwdOwn(const ClockBwdCtx<T>& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t pblock,
                         const StepTeam& t) {
    ForShares(c, t, [&](int r0, int r1) { PackBwdRec(c, a, bf, pblock, r0, r1); });
  }
  static void BwdStep(ClockBwdCtx<T>& c, int s, const StepTeam& t) {
    ForShares(c, t, [&](int r0, int r1) { ClockBwdStep(c, s, r0, r1); });
  }
  static void FinishDh0Team(ClockBwdCtx<T>& c, const StepTeam& t) {
    ForShares(c, t, [&](int r0, int r1) { ClockFinishDh0(c, r0, r1); });
  }
  // the disallowed blocks get no gradient, so they stay zero
  static void FinishGrads(const ClockBwdCtx<T>& c, const BwdArgs<T>& a) {
    const int H = c.H;
    for (int j = 0; j < H; ++j)
      for (int k = 0; k < H; ++k)
        if (k / c.gs < j / c.gs) a.g.w_hh[static_cast<int64_t>(j) * H + k] = T(0);
  }
};
