// Leaky units (Mozer 1992; Deep Learning 10.9.2):
// h_t = alpha*h_{t-1} + (1-alpha)*tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),
// alpha in [0, 1)^H. The alpha*h_{t-1} path carries gradient past W_hh.

template <typename T>
void LeakyFwdStep(FwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  const T* alpha = c.a->w.alpha;
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wp + static_cast<int64_t>(blk) * H * W;
    RowTiles<TileRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = hp + static_cast<int64_t>(r0 + r) * H;
      V acc[R][PG];
      RecAcc<T, PG, R>(c, s, rows, wp, r0, blk * W, MinI(W, H - blk * W), acc);
      for (int u = 0; u < PG; ++u) {
        const int j0 = (blk + u) * W, n = MinI(W, H - j0);
        const V al = LoadN(alpha + j0, n);
        for (int r = 0; r < R; ++r) {
          const int b = r0 + r;
          const int64_t o = static_cast<int64_t>(b) * H + j0;
          const int t = MapT(c.a->pb, s, b);
          const V hpv = LoadN(hp + o, n);
          if (t < 0) {
            StoreN(hc + o, hpv, n);
            continue;
          }
          T* g = GatesAt(c, t, b, j0);
          const V uu = Tanh(InputSide(c, g, c.bias_x + j0, 0, n) + acc[r][u]);
          const V h = Fma(al, hpv - uu, uu);  // alpha*h_{t-1} + (1-alpha)*u
          StoreN(hc + o, h, n);
          StoreN(c.a->y.Row(t, b) + j0, h, n);
          if (c.hprev.p) {
            StoreN(g, uu, n);
            StoreN(c.hprev.Row(t, b) + j0, hpv, n);
          }
        }
      }
    });
  }, s & 1);
}

// The backward context: the driver's and alpha's gradient.
template <typename T>
struct LeakyBwdCtx : BwdCtx<T> {
  T* dalpha;  // [H], each lane written by the thread owning its block
};

template <typename T>
void LeakyBwdStep(LeakyBwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  const T* alpha = c.a->w.alpha;
  const V one = Set1(T(1));
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wpb + static_cast<int64_t>(blk) * H * W;
    V dal[PG];
    for (int u = 0; u < PG; ++u) dal[u] = LoadN(c.dalpha + (blk + u) * W, MinI(W, H - (blk + u) * W));
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const int col = blk * W, len = MinI(PG * W, H - col);
      AskBwd(c, s, r0, R, col, len, 1);
      if (c.ask) AskRows<T>(c.hprev, c.a->pb, s, r0, R, col, len);
      Vec<T> acc[R][PG];
      BackProd<T, PG, R>(c, s + 1, r0, H, wp, acc);
      for (int u = 0; u < PG; ++u) {
      const int j0 = (blk + u) * W, n = MinI(W, H - j0);
      const V al = LoadN(alpha + j0, n);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        const V dh = LoadN(c.a->dy.Row(t, b) + j0, n) + LoadN(c.dh + o, n) + acc[r][u];
        KeepDh(c, t, b, j0, n, dh);
        const V uu = LoadN(c.gates.Row(t, b) + j0, n);
        const V hpv = LoadN(c.hprev.Row(t, b) + j0, n);
        dal[u] = Fma(dh, hpv - uu, dal[u]);  // dh/dalpha = h_{t-1} - u
        StoreN(c.dg.Row(t, b) + j0, dh * (one - al) * (one - uu * uu), n);
        StoreN(c.dh + o, dh * al, n);
      }
      }
    });
    for (int u = 0; u < PG; ++u) StoreN(c.dalpha + (blk + u) * W, dal[u], MinI(W, H - (blk + u) * W));
  }, s & 1);
}

// The cell type (cells/base.hpp).
template <typename T>
struct LeakyCell : CellBase<LeakyCell<T>, T> {
  static constexpr bool kDirect = true;
  static void FwdStep(FwdCtx<T>& c, int s, const StepTeam& t, const T* hp, T* hc) {
    LeakyFwdStep(c, s, t.b0, t.b1, hp, hc);
  }
  using BwdContext = LeakyBwdCtx<T>;
  static void ClaimBwd(BwdContext& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t pblock, bool zero_fill) {
    CellBase<LeakyCell<T>, T>::ClaimBwd(c, a, bf, pblock, zero_fill);
    c.dalpha = bf.aux.Alloc(c.H, true);
  }
  static void BwdStep(BwdContext& c, int s, const StepTeam& t) { LeakyBwdStep(c, s, t.b0, t.b1); }
  static void FinishGrads(const BwdContext& c, const BwdArgs<T>& a) {
    for (int j = 0; a.g.alpha && j < c.H; ++j) a.g.alpha[j] += c.dalpha[j];
  }
};
