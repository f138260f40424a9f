// The only file that includes pybind11: array checks, GIL release, nothing
// else. The Python layer (rnncore/layers.py) gives the friendly messages; the
// checks here are the last line so that no call can reach a kernel with a
// buffer of the wrong size.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "rnncore/api.hpp"
#include "rnncore/dispatch/dispatch.hpp"
#include "rnncore/gemm.hpp"
#include "rnncore/threading.hpp"

namespace py = pybind11;
using namespace rnncore;

namespace {

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// The data pointer of `o`, which must be a C-contiguous T array of `shape`
// (writable if `write`), or null when o is None and `optional`.
template <typename T>
T* Ptr(const py::object& o, const char* name, const std::vector<int64_t>& shape, bool write,
       bool optional = true) {
  if (o.is_none()) {
    if (optional) return nullptr;
    throw py::value_error(std::string(name) + " is required");
  }
  if (!py::isinstance<py::array>(o)) throw py::type_error(std::string(name) + " must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(o);
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " must have dtype " +
                         std::string(py::str(py::dtype::of<T>())) + ", got " +
                         std::string(py::str(a.dtype())));
  std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
  if (got != shape)
    throw py::value_error(std::string(name) + " must be " + ShapeStr(shape) + ", got " + ShapeStr(got));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  if (write && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

struct Common {
  CellSpec cell;
  Problem pb;
  int D = 1, dir = 0, G = 1;
  bool batch_first = false;
};

Common MakeCommon(int kind, bool peephole, bool reset_after, bool reverse, bool batch_first,
                  int threads, const py::array& x, int hidden, int num_dirs, int dir) {
  Common c;
  if (kind < 0 || kind > 3) throw py::value_error("unknown cell kind " + std::to_string(kind));
  c.cell.kind = static_cast<CellKind>(kind);
  c.cell.peephole = peephole;
  c.cell.reset_after = reset_after;
  c.G = NumGates(c.cell);
  if (x.ndim() != 3) throw py::value_error("x must be 3-D, got " + std::to_string(x.ndim()) + "-D");
  if (hidden < 1) throw py::value_error("hidden_size must be >= 1");
  if (num_dirs < 1 || num_dirs > 2 || dir < 0 || dir >= num_dirs)
    throw py::value_error("bad direction index");
  const int64_t d0 = x.shape(0), d1 = x.shape(1), I = x.shape(2);
  c.pb.T = static_cast<int>(batch_first ? d1 : d0);
  c.pb.B = static_cast<int>(batch_first ? d0 : d1);
  c.pb.I = static_cast<int>(I);
  c.pb.H = hidden;
  if (c.pb.T < 1 || c.pb.B < 1 || c.pb.I < 1) throw py::value_error("x must have T, B, I >= 1");
  const int64_t gh = static_cast<int64_t>(c.G) * hidden;
  if (static_cast<int64_t>(c.pb.T) * c.pb.B * std::max<int64_t>(gh, I) > (int64_t(1) << 40))
    throw py::value_error("problem too large");
  c.pb.reverse = reverse;
  c.pb.threads = threads;
  c.D = num_dirs;
  c.dir = dir;
  c.batch_first = batch_first;
  return c;
}

template <typename T>
Seq<T> SeqOf(T* p, int64_t ld, const Common& c) {
  Seq<T> s;
  s.p = p;
  s.ld = ld;
  s.st = c.batch_first ? 1 : c.pb.B;
  s.sb = c.batch_first ? c.pb.T : 1;
  return s;
}

std::vector<int64_t> SeqShape(const Common& c, int64_t width) {
  return c.batch_first ? std::vector<int64_t>{c.pb.B, c.pb.T, width}
                       : std::vector<int64_t>{c.pb.T, c.pb.B, width};
}

const int32_t* Lengths(const py::object& o, const Common& c) {
  const int32_t* p = Ptr<int32_t>(o, "lengths", {c.pb.B}, false);
  if (p)
    for (int b = 0; b < c.pb.B; ++b)
      if (p[b] < 1 || p[b] > c.pb.T)
        throw py::value_error("lengths must be in [1, " + std::to_string(c.pb.T) + "], got " +
                              std::to_string(p[b]));
  return p;
}

template <typename T>
Weights<T> GetWeights(const Common& c, const py::object& w_ih, const py::object& w_hh,
                      const py::object& b_ih, const py::object& b_hh, const py::object& w_ch) {
  const int64_t H = c.pb.H, GH = c.G * H;
  Weights<T> w;
  w.w_ih = Ptr<T>(w_ih, "weight_ih", {GH, c.pb.I}, false, false);
  w.w_hh = Ptr<T>(w_hh, "weight_hh", {GH, H}, false, false);
  w.b_ih = Ptr<T>(b_ih, "bias_ih", {GH}, false);
  w.b_hh = Ptr<T>(b_hh, "bias_hh", {GH}, false);
  if (c.cell.kind == CellKind::kLstm && c.cell.peephole)
    w.w_ch = Ptr<T>(w_ch, "weight_ch", {3, H}, false, false);
  return w;
}

template <typename T>
py::none Forward(int kind, bool peephole, bool reset_after, bool reverse, bool batch_first,
                 int threads, int num_dirs, int dir, const py::array& x, const py::object& w_ih,
                 const py::object& w_hh, const py::object& b_ih, const py::object& b_hh,
                 const py::object& w_ch, const py::object& h0, const py::object& c0,
                 const py::object& lengths, const py::object& y, const py::object& hn,
                 const py::object& cn, const py::object& gates, const py::object& hprev,
                 const py::object& tape_c, const py::object& extra) {
  const int H = static_cast<int>(py::cast<int64_t>(w_hh.attr("shape").attr("__getitem__")(1)));
  Common c = MakeCommon(kind, peephole, reset_after, reverse, batch_first, threads, x, H, num_dirs, dir);
  const int64_t B = c.pb.B, GH = c.G * int64_t(H);
  const bool lstm = c.cell.kind == CellKind::kLstm, gru = c.cell.kind == CellKind::kGru;
  FwdArgs<T> a;
  a.pb = c.pb;
  a.cell = c.cell;
  a.w = GetWeights<T>(c, w_ih, w_hh, b_ih, b_hh, w_ch);
  a.x = SeqOf<const T>(Ptr<T>(x, "x", SeqShape(c, c.pb.I), false, false), c.pb.I, c);
  a.h0 = Ptr<T>(h0, "h0", {B, H}, false);
  a.c0 = lstm ? Ptr<T>(c0, "c0", {B, H}, false) : nullptr;
  a.pb.lengths = Lengths(lengths, c);
  a.y = SeqOf<T>(Ptr<T>(y, "y", SeqShape(c, int64_t(c.D) * H), true, false) + int64_t(dir) * H,
                 int64_t(c.D) * H, c);
  a.hn = Ptr<T>(hn, "hn", {B, H}, true);
  a.cn = lstm ? Ptr<T>(cn, "cn", {B, H}, true) : nullptr;
  if (!gates.is_none()) {
    a.tape.gates = Ptr<T>(gates, "tape gates", SeqShape(c, GH), true, false);
    a.tape.hprev = Ptr<T>(hprev, "tape hprev", SeqShape(c, H), true, false);
    if (lstm) a.tape.c = Ptr<T>(tape_c, "tape c", SeqShape(c, H), true, false);
    if (gru) a.tape.extra = Ptr<T>(extra, "tape extra", SeqShape(c, H), true, false);
  }
  const KernelTable& k = Kernels();
  {
    py::gil_scoped_release release;
    if constexpr (std::is_same<T, float>::value) k.fwd_f32(a); else k.fwd_f64(a);
  }
  return py::none();
}

template <typename T>
py::none Backward(int kind, bool peephole, bool reset_after, bool reverse, bool batch_first,
                  int threads, int num_dirs, int dir, const py::array& x, const py::object& w_ih,
                  const py::object& w_hh, const py::object& b_ih, const py::object& b_hh,
                  const py::object& w_ch, const py::object& h0, const py::object& c0,
                  const py::object& lengths, const py::object& gates, const py::object& hprev,
                  const py::object& tape_c, const py::object& extra, const py::object& dy,
                  const py::object& dhn, const py::object& dcn, const py::object& dx,
                  bool dx_accumulate, const py::object& dh0, const py::object& dc0,
                  const py::object& g_w_ih, const py::object& g_w_hh, const py::object& g_b_ih,
                  const py::object& g_b_hh, const py::object& g_w_ch) {
  const int H = static_cast<int>(py::cast<int64_t>(w_hh.attr("shape").attr("__getitem__")(1)));
  Common c = MakeCommon(kind, peephole, reset_after, reverse, batch_first, threads, x, H, num_dirs, dir);
  const int64_t B = c.pb.B, GH = c.G * int64_t(H), I = c.pb.I;
  const bool lstm = c.cell.kind == CellKind::kLstm, gru = c.cell.kind == CellKind::kGru;
  BwdArgs<T> a;
  a.pb = c.pb;
  a.cell = c.cell;
  a.w = GetWeights<T>(c, w_ih, w_hh, b_ih, b_hh, w_ch);
  a.x = SeqOf<const T>(Ptr<T>(x, "x", SeqShape(c, I), false, false), I, c);
  a.h0 = Ptr<T>(h0, "h0", {B, H}, false);
  a.c0 = lstm ? Ptr<T>(c0, "c0", {B, H}, false) : nullptr;
  a.pb.lengths = Lengths(lengths, c);
  a.tape.gates = Ptr<T>(gates, "tape gates", SeqShape(c, GH), false, false);
  a.tape.hprev = Ptr<T>(hprev, "tape hprev", SeqShape(c, H), false, false);
  if (lstm) a.tape.c = Ptr<T>(tape_c, "tape c", SeqShape(c, H), false, false);
  if (gru) a.tape.extra = Ptr<T>(extra, "tape extra", SeqShape(c, H), false, false);
  a.dy = SeqOf<const T>(Ptr<T>(dy, "dy", SeqShape(c, int64_t(c.D) * H), false, false) + int64_t(dir) * H,
                        int64_t(c.D) * H, c);
  a.dhn = Ptr<T>(dhn, "dhn", {B, H}, false);
  a.dcn = lstm ? Ptr<T>(dcn, "dcn", {B, H}, false) : nullptr;
  T* dxp = Ptr<T>(dx, "dx", SeqShape(c, I), true);
  a.dx = SeqOf<T>(dxp, I, c);
  a.dx_accumulate = dx_accumulate;
  a.dh0 = Ptr<T>(dh0, "dh0", {B, H}, true);
  a.dc0 = lstm ? Ptr<T>(dc0, "dc0", {B, H}, true) : nullptr;
  a.g.w_ih = Ptr<T>(g_w_ih, "grad weight_ih", {GH, I}, true, false);
  a.g.w_hh = Ptr<T>(g_w_hh, "grad weight_hh", {GH, int64_t(H)}, true, false);
  a.g.b_ih = Ptr<T>(g_b_ih, "grad bias_ih", {GH}, true);
  a.g.b_hh = Ptr<T>(g_b_hh, "grad bias_hh", {GH}, true);
  if (a.w.w_ch) a.g.w_ch = Ptr<T>(g_w_ch, "grad weight_ch", {3, int64_t(H)}, true, false);
  const KernelTable& k = Kernels();
  {
    py::gil_scoped_release release;
    if constexpr (std::is_same<T, float>::value) k.bwd_f32(a); else k.bwd_f64(a);
  }
  return py::none();
}


}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnncore's C++ core: fused recurrent kernels (private; use the rnncore package).";
  m.def("forward_f32", &Forward<float>);
  m.def("forward_f64", &Forward<double>);
  m.def("backward_f32", &Backward<float>);
  m.def("backward_f64", &Backward<double>);
  m.def("bind_blas", &BindBlas, py::arg("path"), py::arg("prefix"));
  m.def("blas_bound", &BlasBound);
  m.def("blas_info", &BlasInfo);
  m.def("set_blas_threads", &BlasSetThreads);
  m.def("isa", []() { return std::string(Kernels().name); });
  m.def("available_isas", &AvailableIsas);
  m.def("select_isa", &SelectIsa);
  m.def("max_threads", &MaxThreads);
  m.def("have_openmp", &HaveOpenMP);
  m.def("min_work_per_thread", &MinWorkPerThread);
  m.def("set_min_work_per_thread", &SetMinWorkPerThread);
  m.attr("compiler") = py::str(
#if defined(__clang__)
      "clang " __clang_version__
#elif defined(__GNUC__)
      "gcc " __VERSION__
#else
      "unknown"
#endif
  );
}
