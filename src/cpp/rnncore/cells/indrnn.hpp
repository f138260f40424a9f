// IndRNN (Li et al. 2018, "Independently recurrent neural network"):
// h_t = phi(W_ih x_t + b_ih + w_hh * h_{t-1} + b_hh), phi relu or tanh, w_hh a
// vector [H]: each unit recurs only on itself. No recurrent product: a step is
// one pass over the projected inputs, and a thread's unit blocks run the whole
// sequence without waiting for the others (kUnitsApart).

// One forward step of the unit blocks [b0, b1): the lanes of each batch row.
template <typename T, bool kRelu>
void IndRnnFwdStep(FwdCtx<T>& c, int s, int b0, int b1, const T* hp, T* hc) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  const int j_begin = b0 * W, j_end = MinI(b1 * W, H);
  const T* w = c.a->w.w_hh;
  for (int b = 0; b < c.B; ++b) {
    const int t = MapT(c.a->pb, s, b);
    const int64_t o = static_cast<int64_t>(b) * H;
    if (t < 0) {  // past the row's length: the state stays
      for (int j0 = j_begin; j0 < j_end; j0 += W) {
        const int n = MinI(W, j_end - j0);
        StoreN(hc + o + j0, LoadN(hp + o + j0, n), n);
      }
      continue;
    }
    T* g = c.gates.Row(t, b);
    T* y = c.a->y.Row(t, b);
    T* hprev = c.hprev.p ? c.hprev.Row(t, b) : nullptr;
    for (int j0 = j_begin; j0 < j_end; j0 += W) {
      const int n = MinI(W, j_end - j0);
      const V hpv = LoadN(hp + o + j0, n);
      const V pre = Fma(LoadN(w + j0, n), hpv, InputSide(c, g + j0, c.bias_x + j0, 0, n));
      const V h = kRelu ? Relu(pre) : Tanh(pre);
      StoreN(hc + o + j0, h, n);
      StoreN(y + j0, h, n);
      if (hprev) {  // training: the tape keeps h_t (its derivative) and h_{t-1} (dw_hh's)
        StoreN(g + j0, h, n);
        StoreN(hprev + j0, hpv, n);
      }
    }
  }
}

// One BPTT step of the unit blocks [b0, b1): dh_t = dy_t + the carried
// w_hh * dpre_{t+1}; dpre_t = dh_t phi'(h_t) into dg (for dW_ih, dx and the
// biases); dw_hh += dpre_t * h_{t-1}, in the thread's own lanes of c.dw.
template <typename T, bool kRelu, class Ctx>
void IndRnnBwdStep(Ctx& c, int s, int b0, int b1) {
  constexpr int W = Vec<T>::kW;
  using V = Vec<T>;
  const int H = c.H;
  const int j_begin = b0 * W, j_end = MinI(b1 * W, H);
  const T* w = c.a->w.w_hh;
  const V one = Set1(T(1));
  for (int b = 0; b < c.B; ++b) {
    const int t = MapT(c.a->pb, s, b);
    if (t < 0) continue;  // the carried dh waits for the row's last step
    if (s > 0) AskBwd(c, s - 1, b, 1, j_begin, j_end - j_begin, 1);  // this row's next visit
    const int64_t o = static_cast<int64_t>(b) * H;
    const T* dy = c.a->dy.Row(t, b);
    const T* hrow = c.gates.Row(t, b);
    const T* hprev = c.hprev.Row(t, b);
    T* dg = c.dg.Row(t, b);
    for (int j0 = j_begin; j0 < j_end; j0 += W) {
      const int n = MinI(W, j_end - j0);
      const V dh = LoadN(dy + j0, n) + LoadN(c.dh + o + j0, n);
      KeepDh(c, t, b, j0, n, dh);
      const V h = LoadN(hrow + j0, n);
      // derivatives from the output: relu' = [h > 0], tanh' = 1 - h^2
      const V d = kRelu ? dh * Step(h) : dh * (one - h * h);
      StoreN(dg + j0, d, n);
      StoreN(c.dw + j0, Fma(d, LoadN(hprev + j0, n), LoadN(c.dw + j0, n)), n);
      StoreN(c.dh + o + j0, d * LoadN(w + j0, n), n);
    }
  }
}

// The backward context: the driver's, and the per-unit gradient of w_hh.
template <typename T>
struct IndRnnBwdCtx : BwdCtx<T> {
  T* dw;  // [H], each lane written by the thread owning its block
};

// The cell type (cells/base.hpp).
template <typename T, bool kRelu>
struct IndRnnCellOf : CellBase<IndRnnCellOf<T, kRelu>, T> {
  using BwdContext = IndRnnBwdCtx<T>;
  static constexpr bool kFusedProj = false;  // a step has no product to fuse x_t W_ih^T into
  static constexpr bool kUnitsApart = true;

  template <class F>
  static void With(const CellSpec& cell, F&& f) {
    if (cell.relu) f(IndRnnCellOf<T, true>{});
    else f(IndRnnCellOf<T, false>{});
  }

  static int RecMats(const CellSpec&) { return 0; }
  // The input projection (made in the team) and the step's lanes.
  static int64_t StepWork(const CellSpec&, const Problem& pb) {
    return static_cast<int64_t>(pb.B) * pb.H * (pb.I + 1);
  }
  // w_hh is read as it is: nothing to pack.
  static void ClaimPacks(FwdCtx<T>&, const FwdArgs<T>&, FwdBufs<T>&, int64_t) {}
  static void PackRec(const FwdCtx<T>&, const FwdArgs<T>&, FwdBufs<T>&, int64_t, int, int) {}
  static void FwdStep(FwdCtx<T>& c, int s, const StepTeam& t, const T* hp, T* hc) {
    IndRnnFwdStep<T, kRelu>(c, s, t.b0, t.b1, hp, hc);
  }

  static void ClaimBwd(BwdContext& c, const BwdArgs<T>&, BwdBufs<T>& bf, int64_t, bool) {
    c.dw = bf.pack.Alloc(c.H, true);
  }
  static void PackBwdRec(const BwdContext&, const BwdArgs<T>&, BwdBufs<T>&, int64_t, int, int) {}
  static void BwdStep(BwdContext& c, int s, const StepTeam& t) { IndRnnBwdStep<T, kRelu>(c, s, t.b0, t.b1); }
  // c.dh after the first step already is dh_0 (w_hh * dpre_0).
  static void FinishDh0Team(BwdContext&, const StepTeam&) {}
  static void RecGrads(const BwdContext& c, const BwdArgs<T>& a) {
    for (int j = 0; a.g.w_hh && j < c.H; ++j) a.g.w_hh[j] += c.dw[j];
  }
};
template <typename T>
using IndRnnCell = IndRnnCellOf<T, false>;  // its With picks relu or tanh
