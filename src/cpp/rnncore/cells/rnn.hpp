// Elman cell, h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) with phi tanh
// or relu, as torch.nn.RNN. Fused forward and backward lanes.

template <typename T, bool kRelu>
void RnnFwdStep(FwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
  constexpr int W = Vec<T>::kW;
  const int H = c.H;
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wp + static_cast<int64_t>(blk) * H * W;
    RowTiles<TileRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      const T* rows[R];
      for (int r = 0; r < R; ++r) rows[r] = hp + static_cast<int64_t>(r0 + r) * H;
      Vec<T> acc[R][PG];
      RecAcc<T, PG, R>(c, s, rows, wp, r0, blk * W, MinI(W, H - blk * W), acc);
      for (int u = 0; u < PG; ++u) {
        const int j0 = (blk + u) * W, n = MinI(W, H - j0);
        for (int r = 0; r < R; ++r) {
          const int b = r0 + r;
          const int64_t o = static_cast<int64_t>(b) * H + j0;
          const int t = MapT(c.a->pb, s, b);
          if (t < 0) {
            StoreN(hc + o, LoadN(hp + o, n), n);
            continue;
          }
          T* g = GatesAt(c, t, b, j0);
          const Vec<T> pre = InputSide(c, g, c.bias_x + j0, 0, n) + acc[r][u];
          const Vec<T> h = kRelu ? Relu(pre) : Tanh(pre);
          StoreN(hc + o, h, n);
          StoreN(c.a->y.Row(t, b) + j0, h, n);
          if (c.hprev.p) {
            StoreN(g, h, n);
            StoreN(c.hprev.Row(t, b) + j0, LoadN(hp + o, n), n);
          }
        }
      }
    });
  }, s & 1);
}

template <typename T, bool kRelu>
void RnnBwdStep(BwdCtx<T>& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  const int H = c.H;
  ForUnits<T>(c.paired, H, b0, b1, [&](int blk, auto pg_c) {  // a block or a pair
    constexpr int PG = decltype(pg_c)::value;
    const T* wp = c.wpb + static_cast<int64_t>(blk) * H * W;
    RowTiles<BwdRows<PG>()>(c.B, [&](int r0, auto nr_c) {
      constexpr int R = decltype(nr_c)::value;
      AskBwd(c, s, r0, R, blk * W, MinI(PG * W, H - blk * W), 1);
      Vec<T> acc[R][PG];
      BackProd<T, PG, R>(c, s + 1, r0, H, wp, acc);
      for (int u = 0; u < PG; ++u) {
      const int j0 = (blk + u) * W, n = MinI(W, H - j0);
      for (int r = 0; r < R; ++r) {
        const int b = r0 + r;
        const int t = MapT(c.a->pb, s, b);
        if (t < 0) continue;
        const int64_t o = static_cast<int64_t>(b) * H + j0;
        const Vec<T> dh = LoadN(c.a->dy.Row(t, b) + j0, n) + LoadN(c.dh + o, n) + acc[r][u];
        KeepDh(c, t, b, j0, n, dh);
        const Vec<T> h = LoadN(c.gates.Row(t, b) + j0, n);
        // derivatives from the output: tanh' = 1 - h^2, relu' = [h > 0]
        const Vec<T> d = kRelu ? dh * Step(h) : dh * (Set1(T(1)) - h * h);
        StoreN(c.dg.Row(t, b) + j0, d, n);
        StoreN(c.dh + o, Zero<T>(), n);
      }
      }
    });
  }, s & 1);
}

// The cell type (cells/base.hpp).
template <typename T, bool kRelu>
struct RnnCell : CellBase<RnnCell<T, kRelu>, T> {
  static constexpr bool kDirect = true;
  static void FwdStep(FwdCtx<T>& c, int s, const StepTeam& t, const T* hp, T* hc) {
    RnnFwdStep<T, kRelu>(c, s, t.b0, t.b1, hp, hc);
  }
  static void BwdStep(BwdCtx<T>& c, int s, const StepTeam& t) { RnnBwdStep<T, kRelu>(c, s, t.b0, t.b1); }
};
template <typename T>
using RnnTanhCell = RnnCell<T, false>;
template <typename T>
using RnnReluCell = RnnCell<T, true>;
