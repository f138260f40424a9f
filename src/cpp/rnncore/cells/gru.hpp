// GRU, gate order r, z, n as torch.nn.GRU. reset_after (PyTorch, cuDNN):
// n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); otherwise (Cho et al. 2014):
// n = tanh(W_in x + b_in + W_hn (r*h) + b_hn), which needs r*h of every unit
// before the n product, so that form costs a second barrier per step.
// h_t = (1-z)*n + z*h_{t-1}.

// The contexts: the driver's (FwdCtx, BwdCtx) and what the GRU adds.
template <typename T>
struct GruBwdCtx : BwdCtx<T> {
  Seq<T> dnx;  // reset_after: [N, H] dn_pre feeding W_ih (dg's n columns hold r * dn_pre)
};
template <typename T>
struct GruV1FwdCtx : FwdCtx<T> {
  const T* wp2;  // packed W_hn (wp holds W_hr, W_hz)
  T* rhb;        // [B, H] r * h_{t-1} of the step
};
template <typename T>
struct GruV1BwdCtx : BwdCtx<T> {
  const T* wpb2;  // packed W_hn for d(r * h_{t-1})
};

template <typename T>
void GruFwdStep(FwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  for (int i = b0; i < b1; ++i) {
    const int blk = StepBlock(s, b0, b1, i);
    const int j0 = blk * W, n = MinI(W, H - j0);
    const T* wp = c.wp + static_cast<int64_t>(blk) * H * 3 * W;
    RowTiles<TileRows<3>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = hp + static_cast<int64_t>(r0 + r) * H;
      V acc[R][3];
      RecAcc<T, 3, R>(c, s, rows, wp, r0, j0, n, acc);
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
        const T* bx = c.bias_x + j0;
        const V rg = Sigmoid(LoadN(g, n) + LoadN(bx, n) + acc[r][0]);
        const V zg = Sigmoid(LoadN(g + H, n) + LoadN(bx + H, n) + acc[r][1]);
        const V hn = acc[r][2] + LoadN(c.bias_h + 2 * H + j0, n);  // W_hn h + b_hn
        const V ng = Tanh(Fma(rg, hn, LoadN(g + 2 * H, n) + LoadN(bx + 2 * H, n)));
        const V h = Fma(zg, hpv - ng, ng);  // (1-z)*n + z*h_{t-1}
        StoreN(hc + o, h, n);
        StoreN(c.a->y.Row(t, b) + j0, h, n);
        if (c.hprev.p) {
          StoreN(g, rg, n);
          StoreN(g + H, zg, n);
          StoreN(g + 2 * H, ng, n);
          StoreN(c.extra.Row(t, b) + j0, hn, n);
          StoreN(c.hprev.Row(t, b) + j0, hpv, n);
        }
      }
    });
  }
}

template <typename T>
void GruBwdStep(GruBwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H, K = static_cast<int>(c.GH);
  const V one = Set1(T(1));
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wpb + static_cast<int64_t>(blk) * K * W;
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const int col = blk * W, len = MinI(PG * W, H - col);
      AskBwd(c, s, r0, R, col, len, 3);
      if (c.ask) AskRows<T>(c.extra, c.a->pb, s, r0, R, col, len);
      if (c.ask) AskRows<T>(c.hprev, c.a->pb, s, r0, R, col, len);
      if (c.ask) AskRows<T>(c.dnx, c.a->pb, s, r0, R, col, len, 1, 0, true);
      Vec<T> acc[R][PG];
      BackProd<T, PG, R>(c, s + 1, r0, K, wp, acc);
      for (int u = 0; u < PG; ++u) {
      const int j0 = (blk + u) * W, n = MinI(W, H - j0);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        const V dh = LoadN(c.a->dy.Row(t, b) + j0, n) + LoadN(c.dh + o, n) + acc[r][u];
        KeepDh(c, t, b, j0, n, dh);
        const T* g = c.gates.Row(t, b) + j0;
        const V rg = LoadN(g, n), zg = LoadN(g + H, n), ng = LoadN(g + 2 * H, n);
        const V hn = LoadN(c.extra.Row(t, b) + j0, n);
        const V hpv = LoadN(c.hprev.Row(t, b) + j0, n);
        const V dpn = dh * (one - zg) * (one - ng * ng);
        const V dpz = dh * (hpv - ng) * zg * (one - zg);
        const V dpr = dpn * hn * rg * (one - rg);
        StoreN(c.dh + o, dh * zg, n);
        T* d = c.dg.Row(t, b) + j0;
        StoreN(d, dpr, n);
        StoreN(d + H, dpz, n);
        StoreN(d + 2 * H, dpn * rg, n);  // the h side of n sits behind r
        StoreN(c.dnx.Row(t, b) + j0, dpn, n);
      }
      }
    });
  }, s & 1);
}

// reset_after = false, phase 1: r, z and r*h_{t-1} for this thread's units.
template <typename T>
void GruV1FwdGates(GruV1FwdCtx<T>& c, int s, int b0, int b1, const T* hp) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  for (int i = b0; i < b1; ++i) {
    const int blk = StepBlock(s, b0, b1, i);
    const int j0 = blk * W, n = MinI(W, H - j0);
    const T* wp = c.wp + static_cast<int64_t>(blk) * H * 2 * W;
    RowTiles<TileRows<2>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = hp + static_cast<int64_t>(r0 + r) * H;
      V acc[R][2];
      Prod<T, 2, R>(rows, H, wp, acc);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        T* g = c.gates.Row(t, b) + j0;
        const T* bx = c.bias_x + j0;
        const V rg = Sigmoid(LoadN(g, n) + LoadN(bx, n) + acc[r][0]);
        const V zg = Sigmoid(LoadN(g + H, n) + LoadN(bx + H, n) + acc[r][1]);
        const V hpv = LoadN(hp + o, n);
        const V rh = rg * hpv;
        StoreN(g, rg, n);
        StoreN(g + H, zg, n);
        StoreN(c.rhb + o, rh, n);
        if (c.hprev.p) {
          StoreN(c.extra.Row(t, b) + j0, rh, n);
          StoreN(c.hprev.Row(t, b) + j0, hpv, n);
        }
      }
    });
  }
}

// reset_after = false, phase 2: n from W_hn (r*h) of every unit, then h_t.
template <typename T>
void GruV1FwdOut(GruV1FwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  for (int i = b0; i < b1; ++i) {
    const int blk = StepBlock(s, b0, b1, i);
    const int j0 = blk * W, n = MinI(W, H - j0);
    const T* wp = c.wp2 + static_cast<int64_t>(blk) * H * W;
    RowTiles<TileRows<1>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = c.rhb + static_cast<int64_t>(r0 + r) * H;
      V acc[R][1];
      Prod<T, 1, R>(rows, H, wp, acc);
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
        const V zg = LoadN(g + H, n);
        const V ng = Tanh(LoadN(g + 2 * H, n) + LoadN(c.bias_x + 2 * H + j0, n) + acc[r][0]);
        const V h = Fma(zg, hpv - ng, ng);
        StoreN(g + 2 * H, ng, n);
        StoreN(hc + o, h, n);
        StoreN(c.a->y.Row(t, b) + j0, h, n);
      }
    });
  }
}

// reset_after = false backward, phase 1: dh, then dn_pre and dz_pre.
template <typename T>
void GruV1BwdGates(BwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H, K = 2 * H;
  const V one = Set1(T(1));
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wpb + static_cast<int64_t>(blk) * K * W;
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const int col = blk * W, len = MinI(PG * W, H - col);
      AskBwd(c, s, r0, R, col, len, 3);
      if (c.ask) AskRows<T>(c.hprev, c.a->pb, s, r0, R, col, len);
      Vec<T> acc[R][PG];
      BackProd<T, PG, R>(c, s + 1, r0, K, wp, acc);
      for (int u = 0; u < PG; ++u) {
      const int j0 = (blk + u) * W, n = MinI(W, H - j0);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        const V dh = LoadN(c.a->dy.Row(t, b) + j0, n) + LoadN(c.dh + o, n) + acc[r][u];
        KeepDh(c, t, b, j0, n, dh);
        const T* g = c.gates.Row(t, b) + j0;
        const V zg = LoadN(g + H, n), ng = LoadN(g + 2 * H, n);
        const V hpv = LoadN(c.hprev.Row(t, b) + j0, n);
        T* d = c.dg.Row(t, b) + j0;
        StoreN(d + H, dh * (hpv - ng) * zg * (one - zg), n);
        StoreN(d + 2 * H, dh * (one - zg) * (one - ng * ng), n);
        StoreN(c.dh + o, dh * zg, n);
      }
      }
    });
  }, s & 1);
}

// reset_after = false backward, phase 2: d(r*h) = W_hn^T dn_pre, then dr_pre.
template <typename T>
void GruV1BwdReset(GruV1BwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  const V one = Set1(T(1));
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wpb2 + static_cast<int64_t>(blk) * H * W;
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = DgRow(c, s, r0 + r, 2 * H);
      V acc[R][PG];
      Prod<T, PG, R>(rows, H, wp, acc);
      for (int u = 0; u < PG; ++u) {
      const int j0 = (blk + u) * W, n = MinI(W, H - j0);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        const T* g = c.gates.Row(t, b) + j0;
        const V rg = LoadN(g, n);
        const V hpv = LoadN(c.hprev.Row(t, b) + j0, n);
        const V drh = acc[r][u];
        StoreN(c.dg.Row(t, b) + j0, drh * hpv * rg * (one - rg), n);
        StoreN(c.dh + o, Fma(drh, rg, LoadN(c.dh + o, n)), n);
      }
      }
    });
  }, s & 1);
}

// The cell types (cells/base.hpp): reset_after (b_hn inside r * (.)) and
// Cho et al.'s W_hn (r * h), whose step is two phases with a barrier between.
template <typename T>
struct GruV1Cell;

template <typename T>
struct GruCell : CellBase<GruCell<T>, T> {
  using BwdContext = GruBwdCtx<T>;
  static constexpr int kGates = 3;
  template <class F>
  static void With(const CellSpec& cell, F&& f) {
    if (cell.reset_after) f(GruCell{});
    else f(GruV1Cell<T>{});
  }
  static constexpr bool kDirect = true;
  static constexpr bool kFusedProj = false;  // the n gate's input part stays apart
  static bool HiddenBias(const CellSpec&, int64_t m, int H) { return m >= 2 * static_cast<int64_t>(H); }
  static void FwdStep(FwdCtx<T>& c, int s, const StepTeam& t, const T* hp, T* hc) {
    GruFwdStep(c, s, t.b0, t.b1, hp, hc);
  }
  static void BwdStep(BwdContext& c, int s, const StepTeam& t) { GruBwdStep(c, s, t.b0, t.b1); }
  // dn_pre, without r, feeds W_ih's n rows and b_in: its own [N, H] rows
  static void ClaimBwd(BwdContext& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t pblock, bool zero_fill) {
    CellBase<GruCell<T>, T>::ClaimBwd(c, a, bf, pblock, zero_fill);
    c.dnx = TapeSeq<T>(bf.aux.Alloc(static_cast<int64_t>(a.pb.T) * a.pb.B * c.H, zero_fill), c.H, a.x);
  }
  static void InputGrads(BwdContext& c, const BwdArgs<T>& a, BwdBufs<T>&, T*) {
    const Problem& pb = a.pb;
    const int H = c.H, I = pb.I, h2 = 2 * H, gh = static_cast<int>(c.GH);
    const int64_t N = static_cast<int64_t>(pb.T) * pb.B;
    const int n = static_cast<int>(N), ldx = static_cast<int>(a.x.ld), ldd = static_cast<int>(a.dx.ld);
    const T* X = a.x.p;
    BigGemm<T>(true, h2, I, n, c.dg.p, gh, X, ldx, T(1), a.g.w_ih, I, pb.threads);
    BigGemm<T>(true, H, I, n, c.dnx.p, H, X, ldx, T(1), a.g.w_ih + static_cast<int64_t>(h2) * I, I, pb.threads);
    if (a.dx.p) {
      BigGemm<T>(false, n, I, h2, c.dg.p, gh, a.w.w_ih, I, a.dx_accumulate ? T(1) : T(0), a.dx.p, ldd, pb.threads);
      BigGemm<T>(false, n, I, H, c.dnx.p, H, a.w.w_ih + static_cast<int64_t>(h2) * I, I, T(1), a.dx.p, ldd,
                 pb.threads);
    }
    if (a.g.b_ih) {
      ColSums(c.dg.p, N, c.GH, h2, a.g.b_ih);
      ColSums(c.dnx.p, N, H, H, a.g.b_ih + h2);
    }
    if (a.g.b_hh) ColSums(c.dg.p, N, c.GH, c.GH, a.g.b_hh);
  }
};

template <typename T>
struct GruV1Cell : CellBase<GruV1Cell<T>, T> {
  using FwdContext = GruV1FwdCtx<T>;
  using BwdContext = GruV1BwdCtx<T>;
  static constexpr int kGates = 3;
  static constexpr bool kFusedProj = false;
  static void ClaimPacks(FwdContext& c, const FwdArgs<T>&, FwdBufs<T>& bf, int64_t pblock) {
    c.wp = bf.pack.Alloc(2 * pblock);  // r, z
    c.wp2 = bf.pack2.Alloc(pblock);    // n, read after r * h is known
    c.rhb = bf.aux.Alloc(static_cast<int64_t>(c.B) * c.H, true);
  }
  static void PackRec(const FwdCtx<T>& c, const FwdArgs<T>& a, FwdBufs<T>& bf, int64_t, int b0, int b1) {
    PackFwd(a.w.w_hh, c.H, c.H, 0, 2, bf.pack.get(), b0, b1);
    PackFwd(a.w.w_hh, c.H, c.H, 2, 1, bf.pack2.get(), b0, b1);
  }
  static void FwdStep(FwdContext& c, int s, const StepTeam& t, const T* hp, T* hc) {
    GruV1FwdGates(c, s, t.b0, t.b1, hp);
    Barrier(t.nteam);
    GruV1FwdOut(c, s, t.b0, t.b1, hp, hc);
  }
  static void ClaimBwd(BwdContext& c, const BwdArgs<T>&, BwdBufs<T>& bf, int64_t pblock, bool) {
    c.wpb = bf.pack.Alloc(2 * pblock);
    c.wpb2 = bf.pack2.Alloc(pblock);
  }
  static void PackBwdRec(const BwdCtx<T>& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t, int b0, int b1) {
    PackBwdPairs(a.w.w_hh, c.H, 0, 2 * c.H, bf.pack.get(), b0, b1);
    PackBwdPairs(a.w.w_hh, c.H, 2 * c.H, c.H, bf.pack2.get(), b0, b1);
  }
  static void BwdStep(BwdContext& c, int s, const StepTeam& t) {
    GruV1BwdGates(c, s, t.b0, t.b1);
    Barrier(t.nteam);
    GruV1BwdReset(c, s, t.b0, t.b1);
  }
  static void FinishDh0Team(BwdCtx<T>& c, const StepTeam& t) { FinishDh0(c, t.b0, t.b1, 2 * c.H); }
  // W_hr, W_hz from h_{t-1}; W_hn from r * h_{t-1} (the extra tape)
  static void RecGrads(const BwdCtx<T>& c, const BwdArgs<T>& a) {
    const int H = c.H, n = static_cast<int>(static_cast<int64_t>(a.pb.T) * a.pb.B), gh = static_cast<int>(c.GH);
    BigGemm<T>(true, 2 * H, H, n, c.dg.p, gh, a.tape.hprev, H, T(1), a.g.w_hh, H, a.pb.threads);
    BigGemm<T>(true, H, H, n, c.dg.p + 2 * H, gh, a.tape.extra, H, T(1), a.g.w_hh + static_cast<int64_t>(2 * H) * H,
               H, a.pb.threads);
  }
};
