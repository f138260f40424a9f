// Clockwork RNN (Koutnik et al. 2014): H units in equal groups, group i with
// period T_i updates only at steps with (step0 + s) mod T_i == 0 and reads the
// groups of period >= its own. Blocks whose groups all rest cost no product.

inline bool ClockActive(const CellSpec& cell, int group, int s) {
  return (cell.step0 + s) % cell.periods[group] == 0;
}

// 1/0 per lane of the unit block at j0: is that unit's group updated at step s?
template <typename T>
inline bool ClockMask(const CellSpec& cell, int gs, int j0, int n, int s, Vec<T>* m) {
  alignas(64) T lanes[Vec<T>::kW] = {};
  bool any = false;
  for (int l = 0; l < n; ++l) {
    const bool on = ClockActive(cell, (j0 + l) / gs, s);
    lanes[l] = on ? T(1) : T(0);
    any = any || on;
  }
  *m = Load(lanes);
  return any;
}

template <typename T>
void ClockFwdStep(FwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
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
inline void ClockBackProd(const BwdCtx<T>& c, int s, int r0, int blk, Vec<T> (&acc)[R][1]) {
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
void ClockBwdStep(BwdCtx<T>& c, int s, int b0, int b1) {
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
void ClockFinishDh0(BwdCtx<T>& c, int b0, int b1) {
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

// Zero the entries of a packed copy that the block structure disallows:
// row unit j may read unit k only if group(k) >= group(j).
template <typename T>
void ClockMaskPackedFwd(T* wp, int H, int gs) {  // layout [blk][k][lane]
  constexpr int W = Vec<T>::kW;
  const int nblk = (H + W - 1) / W;
  for (int blk = 0; blk < nblk; ++blk)
    for (int k = 0; k < H; ++k)
      for (int l = 0; l < W; ++l) {
        const int j = blk * W + l;
        if (j < H && k / gs < j / gs) wp[(static_cast<int64_t>(blk) * H + k) * W + l] = T(0);
      }
}
template <typename T>
void ClockMaskPackedBwd(T* wp, int H, int gs) {  // layout [blk][m][lane], lane = output unit k
  constexpr int W = Vec<T>::kW;
  const int nblk = (H + W - 1) / W;
  for (int blk = 0; blk < nblk; ++blk)
    for (int m = 0; m < H; ++m)
      for (int l = 0; l < W; ++l) {
        const int k = blk * W + l;
        if (k < H && k / gs < m / gs) wp[(static_cast<int64_t>(blk) * H + m) * W + l] = T(0);
      }
}
