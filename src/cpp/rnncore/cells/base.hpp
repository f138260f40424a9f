// What a cell type gives the driver (ForwardCell, BackwardCell in driver.hpp), with the
// defaults most cells share. A cell C derives from CellBase<C, T> and hides
// what it does differently; the driver calls C::... and never asks which
// cell it runs. Each cell's type sits at the end of its own file, after its
// step functions; api.hpp's list of kinds names the types (driver.hpp's WithCell).

// The call's buffers a cell may claim: packed weights (pack, pack2), state,
// and aux for whatever else its context points to (GRU v1's r * h, skip's
// batched products, the per-unit gradients of LSTM's peepholes and leaky's
// alpha). They live as long as the call. BwdBufs::dg holds the gate gradients
// the driver claims.
template <typename T>
struct FwdBufs {
  Buffer<T> pack, pack2, state, aux;
};

template <typename T>
struct BwdBufs {
  Buffer<T> dg, pack, pack2, state, aux;
};

// A thread's part of a team: its unit blocks [b0, b1), and a mode its cell
// may set in Own for its steps (clockwork: share out every group's blocks).
struct StepTeam {
  int tid = 0, nteam = 1, b0 = 0, b1 = 0, mode = 0;
};

template <class C, typename T>
struct CellBase {
  // The type the call runs: this one; a cell with variants hides With and
  // calls f with the variant the spec asks for.
  template <class F>
  static void With(const CellSpec&, F&& f) { f(C{}); }

  // Gates per unit (rows of W_ih and W_hh: kGates * H).
  static constexpr int kGates = 1;
  // May a short call read W_hh row by row (DirectProd) instead of repacking it?
  static constexpr bool kDirect = false;
  // May the steps make x_t W_ih^T themselves (FusedProj)?
  static constexpr bool kFusedProj = true;
  // Does a unit's step read only its own units of h_{t-1} (and the backward
  // only its own units' carried gradients)? Then a thread's unit blocks run
  // the whole sequence without waiting for the others: no barrier a step.
  static constexpr bool kUnitsApart = false;
  // The driver's context of a call, which a cell may extend with its own fields.
  using FwdContext = FwdCtx<T>;
  using BwdContext = BwdCtx<T>;

  // The H x H recurrent matrices a step reads.
  static int RecMats(const CellSpec&) { return C::kGates; }
  // Multiply-adds of one step (B rows), which size the team (ChooseTeam).
  static int64_t StepWork(const CellSpec& cell, const Problem& pb) {
    return static_cast<int64_t>(pb.B) * pb.H * C::RecMats(cell) * pb.H;
  }
  // One-gate cells work on block pairs of W_hh (PackPairs) unless direct.
  static bool Paired(const CellSpec&, bool direct) { return !direct && C::kGates == 1; }
  // Whether bias m (of G*H) stays inside the step instead of joining the
  // input side (gru's b_hn under reset_after).
  static bool HiddenBias(const CellSpec&, int64_t, int) { return false; }
  // Tapes of the states before each step (skip: one per delay).
  static int HprevTapes(const CellSpec&) { return 1; }
  // Elements of the call's scratch for the working state: h by step parity, c.
  static int64_t StateScratch(int64_t BH) { return 3 * BH; }

  static void Setup(FwdCtx<T>&, const FwdArgs<T>&) {}

  // The packed recurrent weights: claimed for the call, then each thread
  // packs the unit blocks [b0, b1) it owns.
  static void ClaimPacks(FwdCtx<T>& c, const FwdArgs<T>& a, FwdBufs<T>& bf, int64_t pblock) {
    c.wp = bf.pack.Alloc(C::RecMats(a.cell) * pblock);
  }
  static void PackRec(const FwdCtx<T>& c, const FwdArgs<T>& a, FwdBufs<T>& bf, int64_t, int b0, int b1) {
    if (c.paired) PackPairs(a.w.w_hh, c.H, c.H, bf.pack.get(), b0, b1);
    else PackFwd(a.w.w_hh, c.H, c.H, 0, C::kGates, bf.pack.get(), b0, b1);
  }

  // The working state from h0 (and c0), into the scratch st (StateScratch).
  static void InitState(FwdCtx<T>& c, const FwdArgs<T>& a, FwdBufs<T>&, T* st) {
    const int64_t BH = static_cast<int64_t>(c.B) * c.H;
    c.hb[0] = st;
    c.hb[1] = st + BH;
    c.cb = st + 2 * BH;
    if (a.h0) std::memcpy(c.hb[0], a.h0, sizeof(T) * BH); else ZeroRow(c.hb[0], BH);
    if (a.c0) std::memcpy(c.cb, a.c0, sizeof(T) * BH); else ZeroRow(c.cb, BH);
  }
  static void FinalState(const FwdCtx<T>& c, const FwdArgs<T>& a) {
    const int64_t BH = static_cast<int64_t>(c.B) * c.H;
    if (a.hn) std::memcpy(a.hn, c.hb[a.pb.T & 1], sizeof(T) * BH);
    if (a.cn) std::memcpy(a.cn, c.cb, sizeof(T) * BH);
  }

  // The unit blocks thread t.tid of t.nteam steps: t.b0, t.b1.
  static void Own(const FwdCtx<T>& c, const FwdArgs<T>&, StepTeam& t) {
    if (c.paired) OwnPairs(c.nblk, t.tid, t.nteam, &t.b0, &t.b1);
    else OwnBlocks(c.nblk, t.tid, t.nteam, &t.b0, &t.b1);
  }

  // Before the time loop, in the team: pack the weights of the thread's
  // blocks (pack_own(b0, b1, i0, i1): W_hh's [b0, b1), W_ih's [i0, i1)) and
  // make the input projection of its columns. No barrier: a thread's steps
  // read only its own blocks' columns and packed weights.
  template <class PackOwn>
  static void Prologue(const FwdCtx<T>& c, const FwdArgs<T>& a, const T* packih, bool fused, PackOwn&& pack_own,
                       const StepTeam& t) {
    if (c.direct) return;
    pack_own(t.b0, t.b1, t.b0, t.b1);
    if (!fused) InputProj<T, C::kGates>(c, packih, a.pb.I, static_cast<int64_t>(a.pb.T) * a.pb.B, t.b0, t.b1);
  }

  // One step s of the thread's blocks (FwdStep, in each cell): h_t into hc
  // from hp = h_{t-1}, the lanes writing y and the tapes.

  // -- backward ---------------------------------------------------------
  // W_hh for the step's dh_{t-1} = dg W_hh in block pairs (PackBwdPairs)?
  static bool BwdPaired() { return true; }
  static void SetupBwd(BwdCtx<T>&, const BwdArgs<T>&) {}
  static void ClaimBwd(BwdCtx<T>& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t pblock, bool) {
    c.wpb = bf.pack.Alloc(C::RecMats(a.cell) * pblock);
  }
  static void PackBwdRec(const BwdCtx<T>& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t, int b0, int b1) {
    PackBwdPairs(a.w.w_hh, c.H, 0, static_cast<int>(c.GH), bf.pack.get(), b0, b1);
  }
  static void OwnBwd(const BwdCtx<T>& c, const BwdArgs<T>&, StepTeam& t) {
    OwnPairs(c.nblk, t.tid, t.nteam, &t.b0, &t.b1);
  }
  template <class Ctx>  // the cell's own context (BwdContext), passed on to its PackBwdRec
  static void PackBwdOwn(const Ctx& c, const BwdArgs<T>& a, BwdBufs<T>& bf, int64_t pblock, const StepTeam& t) {
    C::PackBwdRec(c, a, bf, pblock, t.b0, t.b1);
  }
  // The carried dh from the final state's gradient, and dh0 at the end.
  static void BwdInitState(BwdCtx<T>& c, const BwdArgs<T>& a) {
    if (a.dhn) std::memcpy(c.dh, a.dhn, sizeof(T) * c.B * c.H);
  }
  static void BwdFinalState(const BwdCtx<T>& c, const BwdArgs<T>& a) {
    if (a.dh0) std::memcpy(a.dh0, c.dh, sizeof(T) * c.B * c.H);
  }
  // After the loop, in the team: the last dg through W_hh into dh (dh0).
  static void FinishDh0Team(BwdCtx<T>& c, const StepTeam& t) { FinishDh0(c, t.b0, t.b1, static_cast<int>(c.GH)); }

  // dW_ih, dx and the biases' gradients from dg (zeros: GH scratch zeros).
  static void InputGrads(BwdCtx<T>& c, const BwdArgs<T>& a, BwdBufs<T>&, T* zeros) {
    const Problem& pb = a.pb;
    const int I = pb.I, n = static_cast<int>(static_cast<int64_t>(pb.T) * pb.B), gh = static_cast<int>(c.GH);
    const int ldx = static_cast<int>(a.x.ld), ldd = static_cast<int>(a.dx.ld);
    bool done_bias = false;
    if (I <= kNarrowCols && GetGemmPath() != GemmPath::kBlas) {  // dW_ih and the biases in one pass
      T* db = (a.g.b_ih || a.g.b_hh) ? zeros : nullptr;
      NarrowGemmT<T>(gh, I, n, c.dg.p, gh, a.x.p, ldx, a.g.w_ih, I, db, pb.threads);
      for (int64_t j = 0; db && j < c.GH; ++j) {
        if (a.g.b_ih) a.g.b_ih[j] += db[j];
        if (a.g.b_hh) a.g.b_hh[j] += db[j];
      }
      done_bias = true;
    } else {
      BigGemm<T>(true, gh, I, n, c.dg.p, gh, a.x.p, ldx, T(1), a.g.w_ih, I, pb.threads);
    }
    if (a.dx.p)
      BigGemm<T>(false, n, I, gh, c.dg.p, gh, a.w.w_ih, I, a.dx_accumulate ? T(1) : T(0), a.dx.p, ldd, pb.threads);
    if (a.g.b_ih && !done_bias) ColSums(c.dg.p, n, c.GH, c.GH, a.g.b_ih);
    if (a.g.b_hh && !done_bias) ColSums(c.dg.p, n, c.GH, c.GH, a.g.b_hh);
  }
  // dW_hh = dg^T h_{t-1} over all rows.
  static void RecGrads(const BwdCtx<T>& c, const BwdArgs<T>& a) {
    const int n = static_cast<int>(static_cast<int64_t>(a.pb.T) * a.pb.B), gh = static_cast<int>(c.GH);
    BigGemm<T>(true, gh, c.H, n, c.dg.p, gh, a.tape.hprev, c.H, T(1), a.g.w_hh, c.H, a.pb.threads);
  }
  static void FinishGrads(const BwdCtx<T>&, const BwdArgs<T>&) {}
  // One step s of BPTT for the thread's blocks (BwdStep, in each cell).
};
