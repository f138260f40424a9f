// Skip connections through time and removed connections (Lin et al. 1996;
// Deep Learning 10.9.1, 10.9.3): h_t = tanh(W_ih x_t + b_ih + sum_d W_d h_{t-d} + b_hh).
// The last max(delays) states live in a ring of maxd+1 slots of [B, H].

template <typename T>
inline T* RingSlot(T* ring, int slots, int64_t BH, int s) {
  return ring + static_cast<int64_t>(((s % slots) + slots) % slots) * BH;
}

// Whether the forward takes delay d's products d steps at a time: at every
// step s with s % d == 0 one tile of d*B rows makes W_d h_{s-d+i} for the
// steps s+i, i < d (all those states are known at step s), so that W_d is
// read once per d steps rather than at every step. Small batches only,
// whose steps are bound by reading the weights (batch 1 read two matrices
// a step); a larger batch reuses W_d across its rows already.
inline bool SkipBatched(int d, int B) { return d >= 2 && static_cast<int64_t>(d) * B <= TileRows<2>(); }

// The forward context: the driver's and the ring of past states.
template <typename T>
struct SkipFwdCtx : FwdCtx<T> {
  T* ring;               // ring_slots x [B, H] past states
  int ring_slots;
  T* pend;               // the batched delays' products, d x [B, H] each (SkipBatched), or null
  int64_t hprev_stride;  // elements between the delays' hprev tapes
};

template <typename T>
void SkipFwdStep(SkipFwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H, nd = c.a->cell.n_delays;
  const int32_t* delays = c.a->cell.delays;
  const int64_t BH = static_cast<int64_t>(c.B) * H;
  const int64_t pstride = static_cast<int64_t>(c.nblk) * H * W;
  T* cur = RingSlot(c.ring, c.ring_slots, BH, s);
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    if (c.pend) {  // the batched delays' products for this and the next d-1 steps
      T* pq = c.pend;
      for (int q = 0; q < nd; ++q) {
        const int d = delays[q];
        if (!SkipBatched(d, c.B)) continue;
        if (s % d == 0)
          RowTiles<TileRows<PG>()>(d * c.B, [&](int i0, auto ni_c) {  // one tile
            constexpr int RI = decltype(ni_c)::value;
            const T* rows[RI];
            for (int i = 0; i < RI; ++i)  // row i0+i: state h_{s-d+(i0+i)/B} of batch row (i0+i)%B
              rows[i] = RingSlot(c.ring, c.ring_slots, BH, s - d + (i0 + i) / c.B) +
                        static_cast<int64_t>((i0 + i) % c.B) * H;
            V out[RI][PG];
            // 16 chains: W_d comes from L2 (batch 1: 0.071 -> 0.067 ms at T=100, H=128)
            Prod<T, PG, RI, false, 16>(rows, H, c.wp + q * pstride + static_cast<int64_t>(blk) * H * W, out);
            for (int i = 0; i < RI; ++i)
              for (int u = 0; u < PG; ++u) {
                const int j0 = (blk + u) * W;
                StoreN(pq + static_cast<int64_t>(i0 + i) * H + j0, out[i][u], MinI(W, H - j0));
              }
          });
        pq += d * BH;
      }
    }
    RowTiles<TileRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      AskFwd(c, s, r0, R, blk * W, MinI(W, H - blk * W), PG);
      V acc[R][PG];
      if (c.wpx) {
        StepInputs<T, PG, R>(c, s, r0, blk * W, acc);
      } else {
        for (int r = 0; r < R; ++r)
          for (int u = 0; u < PG; ++u) acc[r][u] = Zero<T>();
      }
      const T* pq = c.pend;
      for (int q = 0; q < nd; ++q) {
        if (pq && SkipBatched(delays[q], c.B)) {  // made at the last multiple of d
          const T* src = pq + static_cast<int64_t>(s % delays[q]) * BH;
          for (int r = 0; r < R; ++r)
            for (int u = 0; u < PG; ++u) {
              const int j0 = (blk + u) * W;
              acc[r][u] = acc[r][u] + LoadN(src + static_cast<int64_t>(r0 + r) * H + j0, MinI(W, H - j0));
            }
          pq += delays[q] * BH;
          continue;
        }
        const T* past = RingSlot(c.ring, c.ring_slots, BH, s - delays[q]);
        const T* rows[R];
        for (int r = 0; r < R; ++r) rows[r] = past + static_cast<int64_t>(r0 + r) * H;
        Prod<T, PG, R, true>(rows, H, c.wp + q * pstride + static_cast<int64_t>(blk) * H * W, acc);
      }
      for (int u = 0; u < PG; ++u) {
      const int j0 = (blk + u) * W, n = MinI(W, H - j0);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;  // this row's history is read back from y at the end
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        T* g = GatesAt(c, t, b, j0);
        const V h = Tanh(InputSide(c, g, c.bias_x + j0, 0, n) + acc[r][u]);
        StoreN(cur + o, h, n);
        StoreN(c.a->y.Row(t, b) + j0, h, n);
        if (c.hprev.p) {
          StoreN(g, h, n);
          for (int q = 0; q < nd; ++q) {
            const T* past = RingSlot(c.ring, c.ring_slots, BH, s - delays[q]);
            T* dst = c.hprev.Row(t, b) + q * c.hprev_stride + j0;
            StoreN(dst, LoadN(past + o, n), n);
          }
        }
      }
      }
    });
  }, s & 1);
}

// Final history of each row: the states of its last maxd steps, from y, or
// from the initial history where the row ran fewer steps.
template <typename T>
void SkipFinalState(const FwdArgs<T>& a, int maxd) {
  const int H = a.pb.H, B = a.pb.B;
  for (int i = 0; i < maxd; ++i)
    for (int b = 0; b < B; ++b) {
      const int len = a.pb.lengths ? a.pb.lengths[b] : a.pb.T;
      const int s = len - maxd + i;
      T* dst = a.hn + (static_cast<int64_t>(i) * B + b) * H;
      const T* src = nullptr;
      if (s >= 0) src = a.y.Row(MapT(a.pb, s, b), b);
      else if (a.h0) src = a.h0 + (static_cast<int64_t>(maxd + s) * B + b) * H;
      if (src) std::memcpy(dst, src, sizeof(T) * H);
      else ZeroRow(dst, H);
    }
}

// Gradient reaching h at step s of row b from the final history, or null.
template <typename T>
inline const T* SkipDhn(const BwdCtx<T>& c, int s, int b, int maxd) {
  if (!c.a->dhn) return nullptr;
  const int len = c.a->pb.lengths ? c.a->pb.lengths[b] : c.a->pb.T;
  const int i = s - (len - maxd);
  if (i < 0 || i >= maxd) return nullptr;
  return c.a->dhn + (static_cast<int64_t>(i) * c.B + b) * c.H;
}

template <typename T>
void SkipBwdStep(BwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H, nd = c.a->cell.n_delays, maxd = MaxDelay(c.a->cell);
  const int32_t* delays = c.a->cell.delays;
  const int64_t pstride = static_cast<int64_t>(c.nblk) * H * W;
  const V one = Set1(T(1));
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      AskBwd(c, s, r0, R, blk * W, MinI(PG * W, H - blk * W), 1);
      V acc[R][PG];
      for (int r = 0; r < R; ++r)
        for (int u = 0; u < PG; ++u) acc[r][u] = Zero<T>();
      for (int q = 0; q < nd; ++q) {  // dh_s += W_d^T dpre_{s+d}
        if (s + delays[q] >= c.a->pb.T) continue;
        const T* rows[R];
        for (int r = 0; r < R; ++r) rows[r] = DgRow(c, s + delays[q], r0 + r, 0);
        Prod<T, PG, R, true>(rows, H, c.wpb + q * pstride + static_cast<int64_t>(blk) * H * W, acc);
      }
      for (int u = 0; u < PG; ++u) {
      const int j0 = (blk + u) * W, n = MinI(W, H - j0);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        V dh = LoadN(c.a->dy.Row(t, b) + j0, n) + acc[r][u];
        if (const T* dn = SkipDhn(c, s, b, maxd)) dh = dh + LoadN(dn + j0, n);
        KeepDh(c, t, b, j0, n, dh);
        const V h = LoadN(c.gates.Row(t, b) + j0, n);
        StoreN(c.dg.Row(t, b) + j0, dh * (one - h * h), n);
      }
      }
    });
  }, s & 1);
}

// Gradient of the initial history h_{-maxd} .. h_{-1} (dh0 [maxd, B, H]).
template <typename T>
void SkipFinishDh0(BwdCtx<T>& c, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H, nd = c.a->cell.n_delays, maxd = MaxDelay(c.a->cell);
  const int32_t* delays = c.a->cell.delays;
  const int64_t pstride = static_cast<int64_t>(c.nblk) * H * W;
  if (!c.a->dh0) return;
  for (int i = 0; i < maxd; ++i) {
    const int s_hist = i - maxd;  // the step this history entry stands for
    T* out = c.a->dh0 + static_cast<int64_t>(i) * c.B * H;
    ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
      constexpr int PG = decltype(pg_c)::value;
      RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
        constexpr int R = decltype(nr_c)::value;
        V acc[R][PG];
        for (int r = 0; r < R; ++r)
          for (int u = 0; u < PG; ++u) acc[r][u] = Zero<T>();
        for (int q = 0; q < nd; ++q) {
          const int s = s_hist + delays[q];
          if (s < 0 || s >= c.a->pb.T) continue;
          const T* rows[R];
          for (int r = 0; r < R; ++r) rows[r] = DgRow(c, s, r0 + r, 0);
          Prod<T, PG, R, true>(rows, H, c.wpb + q * pstride + static_cast<int64_t>(blk) * H * W, acc);
        }
        for (int u = 0; u < PG; ++u) {
          const int j0 = (blk + u) * W, n = MinI(W, H - j0);
          for (int r = 0; r < R; ++r) {
            const int b = r0 + r;
            V d = acc[r][u];
            if (const T* dn = SkipDhn(c, s_hist, b, maxd)) d = d + LoadN(dn + j0, n);
            StoreN(out + static_cast<int64_t>(b) * H + j0, d, n);
          }
        }
      });
    });
  }
}

// The cell type (cells/base.hpp): one W_hh per delay, and a ring of past
// states for a state.
template <typename T>
struct SkipCell : CellBase<SkipCell<T>, T> {
  using FwdContext = SkipFwdCtx<T>;
  static int RecMats(const CellSpec& cell) { return cell.n_delays; }
  static int HprevTapes(const CellSpec& cell) { return cell.n_delays; }
  static int64_t StateScratch(int64_t) { return 0; }
  static void PackRec(const FwdCtx<T>& c, const FwdArgs<T>& a, FwdBufs<T>& bf, int64_t pblock, int b0, int b1) {
    for (int q = 0; q < a.cell.n_delays; ++q)
      PackPairs(a.w.w_hh_d[q], c.H, c.H, bf.pack.get() + q * pblock, b0, b1);
  }
  static void Setup(FwdContext& c, const FwdArgs<T>& a) {
    c.hprev_stride = static_cast<int64_t>(a.pb.T) * a.pb.B * c.H;
  }
  static void InitState(FwdContext& c, const FwdArgs<T>& a, FwdBufs<T>& bf, T*) {
    const int64_t BH = static_cast<int64_t>(c.B) * c.H;
    const int maxd = MaxDelay(a.cell);
    c.ring_slots = maxd + 1;
    c.ring = bf.state.Alloc(c.ring_slots * BH, true);
    int64_t n_pend = 0;
    for (int q = 0; q < a.cell.n_delays; ++q)
      if (SkipBatched(a.cell.delays[q], c.B)) n_pend += a.cell.delays[q] * BH;
    c.pend = n_pend ? bf.aux.Alloc(n_pend) : nullptr;
    if (a.h0)
      for (int i = 0; i < maxd; ++i)
        std::memcpy(RingSlot(c.ring, c.ring_slots, BH, i - maxd), a.h0 + i * BH, sizeof(T) * BH);
  }
  static void FinalState(const FwdCtx<T>&, const FwdArgs<T>& a) {
    if (a.hn) SkipFinalState(a, MaxDelay(a.cell));
  }
  static void FwdStep(FwdContext& c, int s, const StepTeam& t, const T*, T*) { SkipFwdStep(c, s, t.b0, t.b1); }
  static void PackBwdRec(const BwdCtx<T>& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t pblock, int b0, int b1) {
    for (int q = 0; q < a.cell.n_delays; ++q)
      PackBwdPairs(a.w.w_hh_d[q], c.H, 0, c.H, bf.pack.get() + q * pblock, b0, b1);
  }
  // the final history's gradient enters at each step (SkipDhn), dh0 at the end
  static void BwdInitState(BwdCtx<T>&, const BwdArgs<T>&) {}
  static void BwdFinalState(const BwdCtx<T>&, const BwdArgs<T>&) {}
  static void BwdStep(BwdCtx<T>& c, int s, const StepTeam& t) { SkipBwdStep(c, s, t.b0, t.b1); }
  static void FinishDh0Team(BwdCtx<T>& c, const StepTeam& t) { SkipFinishDh0(c, t.b0, t.b1); }
  static void RecGrads(const BwdCtx<T>& c, const BwdArgs<T>& a) {
    const int H = c.H;
    const int64_t N = static_cast<int64_t>(a.pb.T) * a.pb.B;
    for (int q = 0; q < a.cell.n_delays; ++q)
      BigGemm<T>(true, H, H, static_cast<int>(N), c.dg.p, static_cast<int>(c.GH), a.tape.hprev + q * N * H, H, T(1),
                 a.g.w_hh_d[q], H, a.pb.threads);
  }
};
