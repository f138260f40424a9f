// LSTM, gate order i, f, g, o as torch.nn.LSTM, optional peepholes (Gers et
// al. 2000). Fused forward and backward lanes for one block of hidden units.

template <typename T>
inline void LstmFwdLanes(FwdCtx<T>& c, int s, int b, int j0, int n, const Vec<T>* acc,
                         const T* hp, T* hc) {
  using V = Vec<T>;
  const int H = c.H;
  const int64_t o = static_cast<int64_t>(b) * H + j0;
  const int t = MapT(c.a->pb, s, b);
  if (t < 0) {  // row finished: the state stays
    StoreN(hc + o, LoadN(hp + o, n), n);
    return;
  }
  T* g = GatesAt(c, t, b, j0);
  const T* bx = c.bias_x + j0;
  V pi = InputSide(c, g, bx, 0, n) + acc[0];
  V pf = InputSide(c, g, bx, H, n) + acc[1];
  const V pg = InputSide(c, g, bx, 2 * H, n) + acc[2];
  V po = InputSide(c, g, bx, 3 * H, n) + acc[3];
  const V cp = LoadN(c.cb + o, n);
  const T* wch = c.a->w.w_ch;
  if (wch) {  // peepholes read c_{t-1} for i, f
    pi = Fma(LoadN(wch + j0, n), cp, pi);
    pf = Fma(LoadN(wch + H + j0, n), cp, pf);
  }
  const V i = Sigmoid(pi), f = Sigmoid(pf), gg = Tanh(pg);
  const V cn = Fma(f, cp, i * gg);  // c_t = f*c_{t-1} + i*g
  if (wch) po = Fma(LoadN(wch + 2 * H + j0, n), cn, po);  // and c_t for o
  const V og = Sigmoid(po);
  const V h = og * Tanh(cn);  // h_t = o*tanh(c_t)
  StoreN(c.cb + o, cn, n);
  StoreN(hc + o, h, n);
  StoreN(c.a->y.Row(t, b) + j0, h, n);
  if (c.hprev.p) {
    StoreN(g, i, n);
    StoreN(g + H, f, n);
    StoreN(g + 2 * H, gg, n);
    StoreN(g + 3 * H, og, n);
    StoreN(c.c.Row(t, b) + j0, cn, n);
    StoreN(c.hprev.Row(t, b) + j0, LoadN(hp + o, n), n);
  }
}

template <typename T>
void LstmFwdStep(FwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
  constexpr int W = Vec<T>::kW;
  const int H = c.H;
  for (int i = b0; i < b1; ++i) {
    const int blk = StepBlock(s, b0, b1, i);
    const int j0 = blk * W, n = MinI(W, H - j0);
    const T* wp = c.wp + static_cast<int64_t>(blk) * H * 4 * W;
    RowTiles<TileRows<4>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = hp + static_cast<int64_t>(r0 + r) * H;
      Vec<T> acc[R][4];
      RecAcc<T, 4, R>(c, s, rows, wp, r0, j0, n, acc);
      for (int r = 0; r < R; ++r) LstmFwdLanes(c, s, r0 + r, j0, n, acc[r], hp, hc);
    });
  }
}

// The backward context: the driver's and the peepholes' gradient.
template <typename T>
struct LstmBwdCtx : BwdCtx<T> {
  T* dwch;  // [3, H], each lane written by the thread owning its block
};

template <typename T>
inline void LstmBwdLanes(LstmBwdCtx<T>& c, int s, int b, int j0, int n, Vec<T> acc) {
  using V = Vec<T>;
  const Problem& pb = c.a->pb;
  const int H = c.H;
  const int t = MapT(pb, s, b);
  if (t < 0) return;  // carried gradients pass through unchanged
  const int64_t o = static_cast<int64_t>(b) * H + j0;
  const V one = Set1(T(1));
  const V dh = LoadN(c.a->dy.Row(t, b) + j0, n) + LoadN(c.dh + o, n) + acc;
  KeepDh(c, t, b, j0, n, dh);
  const T* g = c.gates.Row(t, b) + j0;
  const V i = LoadN(g, n), f = LoadN(g + H, n), gg = LoadN(g + 2 * H, n), og = LoadN(g + 3 * H, n);
  const V cn = LoadN(c.c.Row(t, b) + j0, n);
  V cp;
  if (s > 0) cp = LoadN(c.c.Row(MapT(pb, s - 1, b), b) + j0, n);
  else cp = c.a->c0 ? LoadN(c.a->c0 + o, n) : Zero<T>();
  const V tc = Tanh(cn);
  const V dpo = dh * tc * og * (one - og);
  V dc = Fma(dh * og, one - tc * tc, LoadN(c.dc + o, n));
  const T* wch = c.a->w.w_ch;
  if (wch) dc = Fma(LoadN(wch + 2 * H + j0, n), dpo, dc);
  const V dpi = dc * gg * i * (one - i);
  const V dpg = dc * i * (one - gg * gg);
  const V dpf = dc * cp * f * (one - f);
  V dcp = dc * f;  // dc_{t-1} through the forget gate
  if (wch) {
    dcp = Fma(LoadN(wch + j0, n), dpi, dcp);
    dcp = Fma(LoadN(wch + H + j0, n), dpf, dcp);
    T* dw = c.dwch + j0;
    StoreN(dw, Fma(dpi, cp, LoadN(dw, n)), n);
    StoreN(dw + H, Fma(dpf, cp, LoadN(dw + H, n)), n);
    StoreN(dw + 2 * H, Fma(dpo, cn, LoadN(dw + 2 * H, n)), n);
  }
  StoreN(c.dc + o, dcp, n);
  StoreN(c.dh + o, Zero<T>(), n);
  T* d = c.dg.Row(t, b) + j0;
  StoreN(d, dpi, n);
  StoreN(d + H, dpf, n);
  StoreN(d + 2 * H, dpg, n);
  StoreN(d + 3 * H, dpo, n);
}

template <typename T>
void LstmBwdStep(LstmBwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  const int H = c.H, K = static_cast<int>(c.GH);
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wpb + static_cast<int64_t>(blk) * K * W;
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const int col = blk * W, len = MinI(PG * W, H - col);
      AskBwd(c, s, r0, R, col, len, 4);
      if (c.ask) AskRows<T>(c.c, c.a->pb, s, r0, R, col, len);
      if (c.ask) AskRows<T>(c.c, c.a->pb, s - 1, r0, R, col, len);  // c_{t-1}
      Vec<T> acc[R][PG];
      BackProd<T, PG, R>(c, s + 1, r0, K, wp, acc);
      for (int u = 0; u < PG; ++u) {
        const int j0 = (blk + u) * W, n = MinI(W, H - j0);
        for (int r = 0; r < R; ++r) LstmBwdLanes(c, s, r0 + r, j0, n, acc[r][u]);
      }
    });
  }, s & 1);
}

// The cell type (cells/base.hpp).
template <typename T>
struct LstmCell : CellBase<LstmCell<T>, T> {
  static constexpr int kGates = 4;
  static constexpr bool kDirect = true;
  static void FwdStep(FwdCtx<T>& c, int s, const StepTeam& t, const T* hp, T* hc) {
    LstmFwdStep(c, s, t.b0, t.b1, hp, hc);
  }
  using BwdContext = LstmBwdCtx<T>;
  static void ClaimBwd(BwdContext& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t pblock, bool zero_fill) {
    CellBase<LstmCell<T>, T>::ClaimBwd(c, a, bf, pblock, zero_fill);
    c.dwch = bf.aux.Alloc(3 * static_cast<int64_t>(c.H), true);
  }
  static void BwdStep(BwdContext& c, int s, const StepTeam& t) { LstmBwdStep(c, s, t.b0, t.b1); }
  static void FinishGrads(const BwdContext& c, const BwdArgs<T>& a) {
    if (a.g.w_ch)
      for (int64_t m = 0; m < 3 * static_cast<int64_t>(c.H); ++m) a.g.w_ch[m] += c.dwch[m];
  }
};
