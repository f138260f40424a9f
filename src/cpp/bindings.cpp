// The only file that includes pybind11: array checks, GIL release, nothing
// else. The Python layer (rnncore/layers.py) gives the friendly messages; the
// checks here are the last line so that no call can reach a kernel with a
// buffer of the wrong size.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "rnncore/api.hpp"
#include "rnncore/dispatch/dispatch.hpp"
#include "rnncore/gemm.hpp"
#include "rnncore/memory.hpp"
#include "rnncore/threading.hpp"
#include "rnncore/tuning.hpp"

namespace py = pybind11;
using namespace rnncore;

namespace {

// A shape of up to four dimensions, held inline (no allocation per check).
struct Shape {
  int64_t d[4] = {0, 0, 0, 0};
  int n = 0;
  Shape() = default;
  Shape(std::initializer_list<int64_t> l) {
    for (int64_t v : l) d[n++] = v;
  }
  void Prepend(int64_t v) {
    for (int i = n; i > 0; --i) d[i] = d[i - 1];
    d[0] = v;
    ++n;
  }
};

std::string ShapeStr(const int64_t* s, int n) {
  std::string out = "(";
  for (int i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (n == 1 ? ",)" : ")");
}

// a's dtype is T's: the same descriptor object, or an equivalent one (a
// copied np.dtype, as copy.deepcopy of a layer makes, is another object).
template <typename T>
bool IsDtype(const py::array& a) {
  const py::dtype want = py::dtype::of<T>();
  return a.dtype().is(want) || a.dtype().equal(want);
}

// The data pointer of `o`, which must be a C-contiguous T array of `shape`
// (writable if `write`), or null when o is None and `optional`.
template <typename T>
T* Ptr(const py::object& o, const char* name, const Shape& shape, bool write, bool optional = true) {
  if (o.is_none()) {
    if (optional) return nullptr;
    throw py::value_error(std::string(name) + " is required");
  }
  if (!py::isinstance<py::array>(o)) throw py::type_error(std::string(name) + " must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(o);
  if (!IsDtype<T>(a))
    throw py::type_error(std::string(name) + " must have dtype " +
                         std::string(py::str(py::dtype::of<T>())) + ", got " +
                         std::string(py::str(a.dtype())));
  bool same = a.ndim() == shape.n;
  for (int i = 0; same && i < shape.n; ++i) same = a.shape(i) == shape.d[i];
  if (!same)
    throw py::value_error(std::string(name) + " must be " + ShapeStr(shape.d, shape.n) + ", got " +
                          ShapeStr(reinterpret_cast<const int64_t*>(a.shape()), static_cast<int>(a.ndim())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous");
  if (write && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

// A layer direction's cell and layout as the kernels take them; the sizes
// T, B, I come from x, the thread bound and clockwork's step from the call.
struct Common {
  CellSpec cell;
  Problem pb;
  int D = 1, dir = 0, G = 1, maxd = 1;
  bool batch_first = false;
};

// Sizes whose index products stay in the kernels' integer ranges.
bool SizesFit(const Common& c, int64_t T, int64_t B, int64_t I) {
  const int64_t gh = static_cast<int64_t>(c.G) * c.pb.H;
  const int64_t lim = int64_t(1) << 31;
  return T < lim && B < lim && I < lim && T * B < lim && gh < lim &&
         T * B * std::max(gh, I) < (int64_t(1) << 40);
}

// "2**k" for a limit 2^k (the messages name the limits as Python writes them).
std::string Pow2Str(int64_t v) {
  int k = 0;
  while ((int64_t(1) << k) < v) ++k;
  return "2**" + std::to_string(k);
}

std::string TypeName(const py::handle& o) { return py::str(py::type::of(o).attr("__name__")); }

// A scalar argument of type V (bool, int or int64_t), converted with a
// message naming it: bools only from bools, ints only from integers.
template <typename V>
V Scalar(const py::handle& o, const std::string& name) {
  static PyObject* const np_bool = py::object(py::module_::import("numpy").attr("bool_")).release().ptr();
  const bool is_bool = PyBool_Check(o.ptr()) || PyObject_TypeCheck(o.ptr(), reinterpret_cast<PyTypeObject*>(np_bool));
  bool ok = std::is_same<V, bool>::value ? is_bool : (!is_bool && PyIndex_Check(o.ptr()));
  if (ok) {
    try {
      return o.cast<V>();
    } catch (const py::cast_error&) {
      ok = false;
    }
  }
  const char* want = std::is_same<V, bool>::value ? "a bool" : std::is_same<V, int>::value ? "an int in int32's range" : "an int in int64's range";
  throw py::type_error(name + " must be " + want + ", got " + TypeName(o) + " " + std::string(py::repr(o)));
}

std::vector<int32_t> IntList(const py::handle& o, const std::string& name) {
  if (!PyList_Check(o.ptr()) && !PyTuple_Check(o.ptr()))
    throw py::type_error(name + " must be a list of ints, got " + TypeName(o));
  std::vector<int32_t> out;
  const py::sequence seq = py::reinterpret_borrow<py::sequence>(o);
  for (size_t i = 0; i < seq.size(); ++i)
    out.push_back(Scalar<int>(seq[i], name + "[" + std::to_string(i) + "]"));
  return out;
}

// _core.CellSpec: one direction of one layer, checked once when made, then
// passed to every call of that direction.
class Spec {
 public:
  Spec(const py::object& kind, const py::object& hidden, const py::object& num_dirs, const py::object& dir,
       const py::object& reverse, const py::object& batch_first, const py::object& peephole,
       const py::object& reset_after, const py::object& relu, const py::object& delays,
       const py::object& periods) {
    if (!py::isinstance<CellKind>(kind))
      throw py::type_error("kind must be a CellKind, got " + TypeName(kind) + " " + std::string(py::repr(kind)));
    Common& c = c_;
    c.cell.kind = kind.cast<CellKind>();
    const int h = Scalar<int>(hidden, "hidden");
    c.D = Scalar<int>(num_dirs, "num_dirs");
    c.dir = Scalar<int>(dir, "dir");
    c.pb.reverse = Scalar<bool>(reverse, "reverse");
    c.batch_first = Scalar<bool>(batch_first, "batch_first");
    c.cell.peephole = Scalar<bool>(peephole, "peephole");
    c.cell.reset_after = Scalar<bool>(reset_after, "reset_after");
    c.cell.relu = Scalar<bool>(relu, "relu");
    delays_ = IntList(delays, "delays");
    periods_ = IntList(periods, "periods");
    c.G = NumGates(c.cell);
    if (h < 1) throw py::value_error("hidden must be >= 1, got " + std::to_string(h));
    if (c.D < 1 || c.D > 2) throw py::value_error("num_dirs must be 1 or 2, got " + std::to_string(c.D));
    if (c.dir < 0 || c.dir >= c.D)
      throw py::value_error("dir must be in [0, " + std::to_string(c.D) + "), got " + std::to_string(c.dir));
    if (RecWeightOf(c.cell) == RecWeight::kPerDelay) {
      if (delays_.empty()) throw py::value_error("delays must not be empty");
      for (size_t i = 0; i < delays_.size(); ++i) {
        if (delays_[i] < 1) throw py::value_error("delays must be >= 1, got " + std::to_string(delays_[i]));
        if (delays_[i] > kMaxDelay)
          throw py::value_error("delays must be <= " + Pow2Str(kMaxDelay) + ", got " + std::to_string(delays_[i]));
        for (size_t k = 0; k < i; ++k)
          if (delays_[k] == delays_[i]) throw py::value_error("delays must be distinct");
      }
      c.cell.delays = delays_.data();
      c.cell.n_delays = static_cast<int>(delays_.size());
      c.maxd = MaxDelay(c.cell);
    }
    if (c.cell.kind == CellKind::kClockwork) {
      if (periods_.empty() || h % static_cast<int>(periods_.size()) != 0)
        throw py::value_error("periods must split hidden into equal groups");
      for (size_t i = 0; i < periods_.size(); ++i)
        if (periods_[i] < 1 || (i && periods_[i] <= periods_[i - 1]))
          throw py::value_error("periods must be increasing and >= 1");
      c.cell.periods = periods_.data();
      c.cell.n_periods = static_cast<int>(periods_.size());
    }
    c.pb.H = h;
  }
  Spec(const Spec&) = delete;
  Spec& operator=(const Spec&) = delete;

  // The checked spec with the call's thread bound and step (cell points into this spec's lists).
  Common With(const py::handle& threads, const py::handle& step0) const {
    Common c = c_;
    c.pb.threads = Scalar<int>(threads, "threads");
    c.cell.step0 = Scalar<int64_t>(step0, "step0");
    if (c.cell.step0 < 0 || c.cell.step0 > kMaxStep)
      throw py::value_error("step0 must be in [0, " + Pow2Str(kMaxStep) + "], got " + std::to_string(c.cell.step0));
    return c;
  }
  const Common& Parsed() const { return c_; }

  // The constructor's arguments: what pickling and the tests rebuild it from.
  py::dict Fields() const {
    py::dict d;
    d["kind"] = py::cast(c_.cell.kind);
    d["hidden"] = c_.pb.H;
    d["num_dirs"] = c_.D;
    d["dir"] = c_.dir;
    d["reverse"] = c_.pb.reverse;
    d["batch_first"] = c_.batch_first;
    d["peephole"] = c_.cell.peephole;
    d["reset_after"] = c_.cell.reset_after;
    d["relu"] = c_.cell.relu;
    d["delays"] = py::cast(delays_);
    d["periods"] = py::cast(periods_);
    return d;
  }

 private:
  Common c_;
  std::vector<int32_t> delays_, periods_;
};

std::unique_ptr<Spec> SpecFrom(const py::dict& d) {
  auto get = [&](const char* k) -> py::object {
    if (!d.contains(k)) throw py::value_error(std::string("CellSpec state lacks '") + k + "'");
    return d[k];
  };
  return std::make_unique<Spec>(get("kind"), get("hidden"), get("num_dirs"), get("dir"), get("reverse"),
                                get("batch_first"), get("peephole"), get("reset_after"), get("relu"),
                                get("delays"), get("periods"));
}

// The names a dict argument may hold, as interned Python strings made once
// (under the GIL, at first use): a call looks its entries up without making
// a string per name (which cost about 2 us a training call at T=1).
class Keys {
 public:
  static constexpr size_t kMax = 8;
  Keys(std::initializer_list<const char*> names) : names_(names) {
    if (names_.size() > kMax) throw std::logic_error("Keys: more than kMax names");
  }
  size_t size() const { return names_.size(); }
  const char* name(size_t i) const { return names_[i]; }
  PyObject* str(size_t i) const {
    if (strs_.empty())
      for (const char* n : names_) {
        PyObject* s = PyUnicode_InternFromString(n);  // kept for the life of the process
        if (!s) throw py::error_already_set();
        strs_.push_back(s);
      }
    return strs_[i];
  }
  std::string List() const {
    std::string list;
    for (const char* n : names_) list += std::string(list.empty() ? "" : ", ") + n;
    return list;
  }

 private:
  std::vector<const char*> names_;
  mutable std::vector<PyObject*> strs_;
};

// The entries of a dict argument by name. A key the call does not know is
// an error (a misspelt name must not be ignored); a missing key is None.
class Named {
 public:
  Named(const py::handle& o, const char* what, const Keys& keys) : keys_(keys) {
    if (!PyDict_Check(o.ptr()))
      throw py::type_error(std::string(what) + " must be a dict {name: array}, got " + TypeName(o));
    d_ = py::reinterpret_borrow<py::dict>(o);
    Py_ssize_t found = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      PyObject* v = PyDict_GetItemWithError(d_.ptr(), keys.str(i));  // borrowed
      if (!v && PyErr_Occurred()) throw py::error_already_set();
      vals_[i] = v;
      found += v != nullptr;
    }
    if (found == PyDict_Size(d_.ptr())) return;
    for (auto kv : d_) {  // some entry is none of keys: name it
      bool known = false;
      if (PyUnicode_Check(kv.first.ptr()))
        for (size_t i = 0; i < keys.size(); ++i)
          known = known || PyUnicode_CompareWithASCIIString(kv.first.ptr(), keys.name(i)) == 0;
      if (!known)
        throw py::value_error(std::string(what) + " has an unknown entry " + std::string(py::repr(kv.first)) +
                              " (its entries: " + keys.List() + ")");
    }
  }
  py::object operator[](const char* key) const {
    for (size_t i = 0; i < keys_.size(); ++i)
      if (std::strcmp(keys_.name(i), key) == 0)
        return vals_[i] ? py::reinterpret_borrow<py::object>(vals_[i]) : py::none();
    throw std::logic_error(std::string("Named: no key ") + key);  // a name not in the call's Keys
  }
  const py::dict& dict() const { return d_; }

 private:
  const Keys& keys_;
  py::dict d_;
  std::array<PyObject*, Keys::kMax> vals_{};  // borrowed from d_, which holds them
};

// T, B, I from x, which must be 3-D and not too large.
void SetSizes(const py::array& x, Common* c) {
  if (x.ndim() != 3) throw py::value_error("x must be 3-D, got " + std::to_string(x.ndim()) + "-D");
  const int64_t d0 = x.shape(0), d1 = x.shape(1), I = x.shape(2);
  const int64_t T = c->batch_first ? d1 : d0, B = c->batch_first ? d0 : d1;
  if (T < 1 || B < 1 || I < 1) throw py::value_error("x must have T, B, I >= 1");
  if (!SizesFit(*c, T, B, I)) throw py::value_error("problem too large");
  c->pb.T = static_cast<int>(T);
  c->pb.B = static_cast<int>(B);
  c->pb.I = static_cast<int>(I);
}

Common MakeCommon(const Spec& spec, const py::array& x, const py::handle& threads, const py::handle& step0) {
  Common c = spec.With(threads, step0);
  SetSizes(x, &c);
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

Shape SeqShape(const Common& c, int64_t width) {
  return c.batch_first ? Shape{c.pb.B, c.pb.T, width} : Shape{c.pb.T, c.pb.B, width};
}

// The per-direction state shape: [B, H], or skip's history [maxd, B, H].
Shape StateShape(const Common& c) {
  if (RecWeightOf(c.cell) == RecWeight::kPerDelay) return {c.maxd, c.pb.B, c.pb.H};
  return {c.pb.B, c.pb.H};
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

// Skip's per-delay [H, H] matrices from a list of arrays.
template <typename T>
std::vector<T*> DelayMats(const py::object& o, const Common& c, const char* name, bool write) {
  std::vector<T*> out;
  if (!py::isinstance<py::list>(o) && !py::isinstance<py::tuple>(o))
    throw py::type_error(std::string(name) + " must be a list of arrays, got " + TypeName(o));
  py::sequence seq = py::reinterpret_borrow<py::sequence>(o);
  if (static_cast<int>(seq.size()) != c.cell.n_delays)
    throw py::value_error(std::string(name) + " must hold one matrix per delay (" + std::to_string(c.cell.n_delays) +
                          "), got " + std::to_string(seq.size()));
  for (size_t i = 0; i < seq.size(); ++i)
    out.push_back(Ptr<T>(seq[i], name, {c.pb.H, c.pb.H}, write, false));
  return out;
}

// weights and grads: {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ch", "alpha"}
const Keys kWeightKeys = {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ch", "alpha"};
const Keys kTapeKeys = {"gates", "hprev", "c", "extra"};

// The recurrent weight: [G*H, H], a vector [G*H], or skip's list of [H, H].
template <typename T>
T* RecWeightPtr(const Common& c, const py::object& o, const std::string& name, bool write, std::vector<T*>* per) {
  const int64_t H = c.pb.H, GH = c.G * H;
  switch (RecWeightOf(c.cell)) {
    case RecWeight::kPerDelay:
      *per = DelayMats<T>(o, c, (name + "_d").c_str(), write);
      return nullptr;
    case RecWeight::kVector: return Ptr<T>(o, name.c_str(), {GH}, write, false);
    case RecWeight::kMatrix: break;
  }
  return Ptr<T>(o, name.c_str(), {GH, H}, write, false);
}

template <typename T>
Weights<T> GetWeights(const Common& c, const py::object& o, std::vector<T*>* wd) {
  const Named w(o, "weights", kWeightKeys);
  const int64_t H = c.pb.H, GH = c.G * H;
  Weights<T> out;
  out.w_ih = Ptr<T>(w["weight_ih"], "weight_ih", {GH, c.pb.I}, false, false);
  out.w_hh = RecWeightPtr<T>(c, w["weight_hh"], "weight_hh", false, wd);
  out.w_hh_d = wd->empty() ? nullptr : wd->data();
  out.b_ih = Ptr<T>(w["bias_ih"], "bias_ih", {GH}, false);
  out.b_hh = Ptr<T>(w["bias_hh"], "bias_hh", {GH}, false);
  if (c.cell.kind == CellKind::kLstm && c.cell.peephole)
    out.w_ch = Ptr<T>(w["weight_ch"], "weight_ch", {3, H}, false, false);
  if (c.cell.kind == CellKind::kLeaky) out.alpha = Ptr<T>(w["alpha"], "alpha", {H}, false, false);
  return out;
}

template <typename T>
Grads<T> GetGrads(const Common& c, const Weights<T>& w, const py::object& o, std::vector<T*>* gd) {
  const Named g(o, "grads", kWeightKeys);
  const int64_t H = c.pb.H, GH = c.G * H;
  Grads<T> out;
  out.w_ih = Ptr<T>(g["weight_ih"], "grad weight_ih", {GH, c.pb.I}, true, false);
  out.w_hh = RecWeightPtr<T>(c, g["weight_hh"], "grad weight_hh", true, gd);
  out.w_hh_d = gd->empty() ? nullptr : gd->data();
  out.b_ih = w.b_ih ? Ptr<T>(g["bias_ih"], "grad bias_ih", {GH}, true, false) : nullptr;
  out.b_hh = w.b_hh ? Ptr<T>(g["bias_hh"], "grad bias_hh", {GH}, true, false) : nullptr;
  if (w.w_ch) out.w_ch = Ptr<T>(g["weight_ch"], "grad weight_ch", {3, H}, true, false);
  if (w.alpha) out.alpha = Ptr<T>(g["alpha"], "grad alpha", {H}, true, false);
  return out;
}

// tape = {"gates", "hprev", "c", "extra"}, or None for inference.
template <typename T>
Tape<T> GetTape(const Common& c, const py::object& o, bool write) {
  Tape<T> t;
  if (o.is_none()) return t;
  const Named tp(o, "tape", kTapeKeys);
  const int64_t H = c.pb.H;
  t.gates = Ptr<T>(tp["gates"], "tape gates", SeqShape(c, c.G * H), write, false);
  Shape hs = SeqShape(c, H);
  if (RecWeightOf(c.cell) == RecWeight::kPerDelay) hs.Prepend(c.cell.n_delays);
  t.hprev = Ptr<T>(tp["hprev"], "tape hprev", hs, write, false);
  if (c.cell.kind == CellKind::kLstm) t.c = Ptr<T>(tp["c"], "tape c", SeqShape(c, H), write, false);
  if (c.cell.kind == CellKind::kGru) t.extra = Ptr<T>(tp["extra"], "tape extra", SeqShape(c, H), write, false);
  return t;
}

// forward(spec, x, weights, h0, c0, lengths, y, hn, cn, tape, threads, step0)
template <typename T>
void Forward(const Spec& spec, const py::array& x, const py::object& weights, const py::object& h0,
             const py::object& c0, const py::object& lengths, const py::object& y, const py::object& hn,
             const py::object& cn, const py::object& tape, const py::object& threads, const py::object& step0) {
  const Common c = MakeCommon(spec, x, threads, step0);
  const int64_t H = c.pb.H;
  const bool lstm = c.cell.kind == CellKind::kLstm;
  std::vector<T*> wd;
  FwdArgs<T> a;
  a.pb = c.pb;
  a.cell = c.cell;
  a.w = GetWeights<T>(c, weights, &wd);
  a.x = SeqOf<const T>(Ptr<T>(x, "x", SeqShape(c, c.pb.I), false, false), c.pb.I, c);
  a.h0 = Ptr<T>(h0, "h0", StateShape(c), false);
  a.c0 = lstm ? Ptr<T>(c0, "c0", StateShape(c), false) : nullptr;
  a.pb.lengths = Lengths(lengths, c);
  a.y = SeqOf<T>(Ptr<T>(y, "y", SeqShape(c, int64_t(c.D) * H), true, false) + int64_t(c.dir) * H,
                 int64_t(c.D) * H, c);
  a.hn = Ptr<T>(hn, "hn", StateShape(c), true);
  a.cn = lstm ? Ptr<T>(cn, "cn", StateShape(c), true) : nullptr;
  a.tape = GetTape<T>(c, tape, true);
  const KernelTable& k = Kernels();
  py::gil_scoped_release release;
  if constexpr (std::is_same<T, float>::value) k.fwd_f32(a); else k.fwd_f64(a);
}

// backward(spec, x, weights, h0, c0, lengths, tape, dy, dhn, dcn, dx, dx_accumulate,
//          dh0, dc0, grads, dh_seq, threads, step0)
template <typename T>
void Backward(const Spec& spec, const py::array& x, const py::object& weights, const py::object& h0,
              const py::object& c0, const py::object& lengths, const py::object& tape, const py::object& dy,
              const py::object& dhn, const py::object& dcn, const py::object& dx, const py::object& dx_accumulate,
              const py::object& dh0, const py::object& dc0, const py::object& grads, const py::object& dh_seq,
              const py::object& threads, const py::object& step0) {
  const Common c = MakeCommon(spec, x, threads, step0);
  const int64_t H = c.pb.H, I = c.pb.I;
  const bool lstm = c.cell.kind == CellKind::kLstm;
  std::vector<T*> wd, gd;
  BwdArgs<T> a;
  a.pb = c.pb;
  a.cell = c.cell;
  a.w = GetWeights<T>(c, weights, &wd);
  a.x = SeqOf<const T>(Ptr<T>(x, "x", SeqShape(c, I), false, false), I, c);
  a.h0 = Ptr<T>(h0, "h0", StateShape(c), false);
  a.c0 = lstm ? Ptr<T>(c0, "c0", StateShape(c), false) : nullptr;
  a.pb.lengths = Lengths(lengths, c);
  if (tape.is_none()) throw py::value_error("tape is required");
  a.tape = GetTape<T>(c, tape, false);
  a.dy = SeqOf<const T>(Ptr<T>(dy, "dy", SeqShape(c, int64_t(c.D) * H), false, false) + int64_t(c.dir) * H,
                        int64_t(c.D) * H, c);
  a.dhn = Ptr<T>(dhn, "dhn", StateShape(c), false);
  a.dcn = lstm ? Ptr<T>(dcn, "dcn", StateShape(c), false) : nullptr;
  a.dx = SeqOf<T>(Ptr<T>(dx, "dx", SeqShape(c, I), true), I, c);
  a.dx_accumulate = Scalar<bool>(dx_accumulate, "dx_accumulate");
  a.dh0 = Ptr<T>(dh0, "dh0", StateShape(c), true);
  a.dc0 = lstm ? Ptr<T>(dc0, "dc0", StateShape(c), true) : nullptr;
  a.g = GetGrads<T>(c, a.w, grads, &gd);
  {  // outputs must not alias inputs: the kernels read weights while adding into grads.
     // Every array here was checked C-contiguous, so byte ranges decide overlap.
    std::vector<std::pair<const char*, const char*>> ins, outs;
    auto collect = [](const py::handle& o, std::vector<std::pair<const char*, const char*>>* v) {
      auto add = [v](const py::handle& e) {
        if (!py::isinstance<py::array>(e)) return;
        py::array a = py::reinterpret_borrow<py::array>(e);
        const char* p = static_cast<const char*>(a.data());
        v->emplace_back(p, p + a.nbytes());
      };
      if (py::isinstance<py::list>(o) || py::isinstance<py::tuple>(o)) {
        for (auto e : o) add(e);
      } else {
        add(o);
      }
    };
    auto collect_dict = [&](const py::handle& o, std::vector<std::pair<const char*, const char*>>* v) {
      if (PyDict_Check(o.ptr()))
        for (auto kv : py::reinterpret_borrow<py::dict>(o)) collect(kv.second, v);
    };
    collect_dict(weights, &ins);
    collect_dict(tape, &ins);
    collect(x, &ins);
    for (const py::object* o : {&dy, &h0, &c0, &dhn, &dcn, &lengths}) collect(*o, &ins);
    collect_dict(grads, &outs);
    for (const py::object* o : {&dx, &dh0, &dc0, &dh_seq}) collect(*o, &outs);
    for (size_t i = 0; i < outs.size(); ++i)  // nor each other
      for (size_t j = 0; j < i; ++j)
        if (outs[i].first < outs[j].second && outs[j].first < outs[i].second)
          throw py::value_error("backward outputs (grads, dx, dh0, dc0) must not share memory");
    for (const auto& o : outs)
      for (const auto& in : ins)
        if (o.first < in.second && in.first < o.second)
          throw py::value_error("backward outputs (grads, dx, dh0, dc0) must not share memory with its inputs");
  }
  if (T* p = Ptr<T>(dh_seq, "dh_seq", SeqShape(c, int64_t(c.D) * H), true))
    a.dh_seq = SeqOf<T>(p + int64_t(c.dir) * H, int64_t(c.D) * H, c);
  const KernelTable& k = Kernels();
  py::gil_scoped_release release;
  if constexpr (std::is_same<T, float>::value) k.bwd_f32(a); else k.bwd_f64(a);
}

// A one-direction layer's inference call with its spec parsed and weights
// checked once: the path of a streamed step, where the per-call checks would
// cost more than the step. call(x, state, params, threads) runs only a call
// it can take as it is: x and the state exact C-contiguous arrays of the
// right dtype and shapes, and `params` still holding the very arrays the
// weights were checked from. For anything else it returns None, and the
// caller takes the checked path, which converts what can be converted and
// reports what cannot.
template <typename T>
class Prepared {
 public:
  Prepared(const py::object& spec, int input_size, const py::object& weights, const py::list& names,
           const py::list& arrays)
      : spec_(spec) {
    if (!py::isinstance<Spec>(spec)) throw py::type_error("spec must be a CellSpec, got " + TypeName(spec));
    c_ = spec.cast<const Spec&>().Parsed();  // cell points into spec_'s lists
    if (c_.D != 1) throw py::value_error("prepared calls take one direction");
    if (input_size < 1) throw py::value_error("input_size must be >= 1");
    if (names.size() != arrays.size()) throw py::value_error("names and arrays differ in length");
    c_.pb.I = input_size;
    w_ = GetWeights<T>(c_, weights, &wd_);
    for (auto kv : py::reinterpret_borrow<py::dict>(weights))  // the arrays, held alive
      held_.append(py::isinstance<py::list>(kv.second) ? py::object(py::tuple(py::reinterpret_borrow<py::object>(kv.second))) : py::reinterpret_borrow<py::object>(kv.second));
    for (size_t i = 0; i < names.size(); ++i) {
      if (!py::isinstance<py::str>(names[i])) throw py::type_error("names must be strings");
      bound_.emplace_back(names[i], arrays[i]);
    }
  }

  py::object Call(const py::handle& x, const py::handle& state, const py::handle& params, int threads) {
    if (!PyDict_Check(params.ptr())) return py::none();
    for (const auto& nb : bound_)
      if (PyDict_GetItem(params.ptr(), nb.first.ptr()) != nb.second.ptr()) return py::none();
    const T* px = Exact(x, 3);
    if (!px) return py::none();
    const py::array xa = py::reinterpret_borrow<py::array>(x);
    const int64_t d0 = xa.shape(0), d1 = xa.shape(1);
    const int64_t Tn = c_.batch_first ? d1 : d0, B = c_.batch_first ? d0 : d1, H = c_.pb.H;
    if (xa.shape(2) != c_.pb.I || Tn < 1 || B < 1 || !SizesFit(c_, Tn, B, c_.pb.I)) return py::none();

    const CellKind kind = c_.cell.kind;
    const bool lstm = kind == CellKind::kLstm, clock = kind == CellKind::kClockwork;
    const T *h0 = nullptr, *c0 = nullptr;
    int64_t step0 = 0;  // clockwork's step count
    if (!state.is_none()) {
      if (lstm || clock) {  // (h, c), or clockwork's (h, step)
        if (!(PyTuple_Check(state.ptr()) || PyList_Check(state.ptr()))) return py::none();
        const py::sequence st = py::reinterpret_borrow<py::sequence>(state);
        if (st.size() != 2) return py::none();
        h0 = StateOf(st[0], B);
        if (!h0) return py::none();
        if (lstm) {
          c0 = StateOf(st[1], B);
          if (!c0) return py::none();
        } else {  // a plain int in [0, 2**62], as the checked path takes it
          if (!PyLong_CheckExact(st[1].ptr())) return py::none();
          int overflow = 0;
          const long long v = PyLong_AsLongLongAndOverflow(st[1].ptr(), &overflow);
          if (overflow || v < 0 || v > kMaxStep) return py::none();
          step0 = v;
        }
      } else {
        h0 = StateOf(state, B);
        if (!h0) return py::none();
      }
    }

    Common c;  // the sizes of this call on the parsed spec (cell points into c_'s delays, periods)
    c.cell = c_.cell;
    c.cell.step0 = step0;
    c.pb = c_.pb;
    c.batch_first = c_.batch_first;
    c.pb.T = static_cast<int>(Tn);
    c.pb.B = static_cast<int>(B);
    c.pb.threads = threads;
    py::array_t<T> y(c.batch_first ? std::vector<py::ssize_t>{B, Tn, H} : std::vector<py::ssize_t>{Tn, B, H});
    py::array_t<T> hn(StateDims(B));
    py::object cn = lstm ? py::array_t<T>({py::ssize_t(1), py::ssize_t(B), py::ssize_t(H)}) : py::object();
    FwdArgs<T> a;
    a.pb = c.pb;
    a.cell = c.cell;
    a.w = w_;
    a.x = SeqOf<const T>(px, c.pb.I, c);
    a.h0 = h0;
    a.c0 = c0;
    a.y = SeqOf<T>(y.mutable_data(), H, c);
    a.hn = hn.mutable_data();
    a.cn = lstm ? static_cast<T*>(py::reinterpret_borrow<py::array>(cn).mutable_data()) : nullptr;
    {
      const KernelTable& k = Kernels();
      py::gil_scoped_release release;
      if constexpr (std::is_same<T, float>::value) k.fwd_f32(a); else k.fwd_f64(a);
    }
    if (lstm) return py::make_tuple(y, py::make_tuple(hn, cn));
    if (clock) return py::make_tuple(y, py::make_tuple(hn, py::int_(step0 + Tn)));
    return py::make_tuple(y, hn);
  }

 private:
  // The data of o if it is a C-contiguous T array of ndim dimensions, else null.
  static const T* Exact(const py::handle& o, int ndim) {
    if (!py::isinstance<py::array>(o)) return nullptr;
    const py::array a = py::reinterpret_borrow<py::array>(o);
    if (a.ndim() != ndim || !(a.flags() & py::array::c_style) || !IsDtype<T>(a))
      return nullptr;
    return static_cast<const T*>(a.data());
  }
  // The shape of a state entry: (1, B, H), or skip's history (1, max_delay, B, H).
  std::vector<py::ssize_t> StateDims(int64_t B) const {
    if (RecWeightOf(c_.cell) == RecWeight::kPerDelay) return {1, c_.maxd, B, c_.pb.H};
    return {1, B, c_.pb.H};
  }
  // A state entry: a C-contiguous T array of StateDims(B), else null.
  const T* StateOf(const py::handle& o, int64_t B) const {
    const std::vector<py::ssize_t> dims = StateDims(B);
    const T* p = Exact(o, static_cast<int>(dims.size()));
    if (!p) return nullptr;
    const py::array a = py::reinterpret_borrow<py::array>(o);
    for (size_t i = 0; i < dims.size(); ++i)
      if (a.shape(i) != dims[i]) return nullptr;
    return p;
  }

  Common c_;
  py::object spec_;  // the CellSpec c_ was parsed from
  py::list held_;    // the weight arrays w_ points into
  Weights<T> w_;
  std::vector<T*> wd_;
  std::vector<std::pair<py::object, py::object>> bound_;  // parameter name -> array checked
};

template <typename T>
void BindPrepared(py::module_& m, const char* name) {
  py::class_<Prepared<T>>(m, name)
      .def(py::init<const py::object&, int, const py::object&, const py::list&, const py::list&>(),
           py::arg("spec"), py::arg("input_size"), py::arg("weights"), py::arg("names"), py::arg("arrays"))
      .def("__call__", &Prepared<T>::Call, py::arg("x"), py::arg("state"), py::arg("params"),
           py::arg("threads"))
      // a copied or pickled layer prepares its own call again
      .def("__reduce__", [](const py::object&) { return py::make_tuple(py::type::of(py::none()), py::tuple()); });
}

// gemm(trans_a, trans_b, alpha, a, b, beta, c, threads): c = alpha op(a) op(b) + beta c,
// 2-D C-contiguous arrays of one dtype; rnncore's products for its feed-forward layers.
template <typename T>
void GemmPy(bool ta, bool tb, double alpha, const py::array& a, const py::array& b, double beta,
            const py::array& c, int threads) {
  for (const py::array* arr : {&a, &b, &c})
    if (arr->ndim() != 2) throw py::value_error("gemm operands must be 2-D");
  const int64_t m = ta ? a.shape(1) : a.shape(0), k = ta ? a.shape(0) : a.shape(1);
  const int64_t n = tb ? b.shape(0) : b.shape(1), kb = tb ? b.shape(1) : b.shape(0);
  if (kb != k) throw py::value_error("gemm: inner sizes differ");
  const int64_t lim = int64_t(1) << 31;
  if (m >= lim || n >= lim || k >= lim) throw py::value_error("gemm: operands too large");
  const T* pa = Ptr<T>(a, "a", {a.shape(0), a.shape(1)}, false, false);
  const T* pb = Ptr<T>(b, "b", {b.shape(0), b.shape(1)}, false, false);
  T* pc = Ptr<T>(c, "c", {m, n}, true, false);
  {
    const char* c0 = reinterpret_cast<const char*>(pc);
    const char* c1 = c0 + c.nbytes();
    for (const py::array* in : {&a, &b}) {
      const char* i0 = static_cast<const char*>(in->data());
      if (c0 < i0 + in->nbytes() && i0 < c1) throw py::value_error("gemm: c must not overlap a or b");
    }
  }
  py::gil_scoped_release release;
  Gemm<T>(ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), static_cast<T>(alpha), pa,
          static_cast<int>(a.shape(1)), pb, static_cast<int>(b.shape(1)), static_cast<T>(beta), pc,
          static_cast<int>(n), threads);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnncore's C++ core: fused recurrent kernels (private; use the rnncore package).";
  {
    py::enum_<CellKind> kinds(m, "CellKind", "The cell kinds of the kernels (api.hpp).");
#define RNNCORE_KIND_EXPORT(e, name, gates, rec, type) kinds.value(#name, CellKind::e);
    RNNCORE_CELL_KINDS(RNNCORE_KIND_EXPORT)
#undef RNNCORE_KIND_EXPORT
  }
  py::class_<Spec>(m, "CellSpec", "One direction of one layer: its cell and layout, checked when made.")
      .def(py::init<const py::object&, const py::object&, const py::object&, const py::object&, const py::object&,
                    const py::object&, const py::object&, const py::object&, const py::object&, const py::object&,
                    const py::object&>(),
           py::arg("kind"), py::arg("hidden"), py::kw_only(), py::arg("num_dirs") = 1, py::arg("dir") = 0,
           py::arg("reverse") = false, py::arg("batch_first") = false, py::arg("peephole") = false,
           py::arg("reset_after") = true, py::arg("relu") = false, py::arg("delays") = py::list(),
           py::arg("periods") = py::list())
      .def("fields", &Spec::Fields, "The constructor's arguments, as a dict.")
      .def("__repr__", [](const Spec& s) {
        std::string out = "CellSpec(";
        bool first = true;
        for (auto kv : s.Fields()) {
          out += (first ? "" : ", ") + std::string(py::str(kv.first)) + "=" + std::string(py::repr(kv.second));
          first = false;
        }
        return out + ")";
      })
      .def(py::pickle([](const Spec& s) { return s.Fields(); }, [](const py::dict& d) { return SpecFrom(d); }));
  for (const char* name : {"forward_f32", "forward_f64"}) {
    const bool f32 = std::string(name) == "forward_f32";
    auto args = std::make_tuple(py::arg("spec"), py::arg("x"), py::arg("weights"), py::arg("h0"),
                                py::arg("c0"), py::arg("lengths"), py::arg("y"), py::arg("hn"),
                                py::arg("cn"), py::arg("tape"), py::arg("threads") = 1, py::arg("step0") = 0);
    if (f32) std::apply([&](auto... a) { m.def(name, &Forward<float>, a...); }, args);
    else std::apply([&](auto... a) { m.def(name, &Forward<double>, a...); }, args);
  }
  for (const char* name : {"backward_f32", "backward_f64"}) {
    const bool f32 = std::string(name) == "backward_f32";
    auto args = std::make_tuple(py::arg("spec"), py::arg("x"), py::arg("weights"), py::arg("h0"),
                                py::arg("c0"), py::arg("lengths"), py::arg("tape"), py::arg("dy"),
                                py::arg("dhn"), py::arg("dcn"), py::arg("dx"), py::arg("dx_accumulate"),
                                py::arg("dh0"), py::arg("dc0"), py::arg("grads"),
                                py::arg("dh_seq") = py::none(), py::arg("threads") = 1, py::arg("step0") = 0);
    if (f32) std::apply([&](auto... a) { m.def(name, &Backward<float>, a...); }, args);
    else std::apply([&](auto... a) { m.def(name, &Backward<double>, a...); }, args);
  }
  BindPrepared<float>(m, "Prepared_f32");
  BindPrepared<double>(m, "Prepared_f64");
  for (const char* name : {"gemm_f32", "gemm_f64"}) {
    auto args = std::make_tuple(py::arg("trans_a"), py::arg("trans_b"), py::arg("alpha"), py::arg("a"),
                                py::arg("b"), py::arg("beta"), py::arg("c"), py::arg("threads"));
    if (std::string(name) == "gemm_f32") std::apply([&](auto... a) { m.def(name, &GemmPy<float>, a...); }, args);
    else std::apply([&](auto... a) { m.def(name, &GemmPy<double>, a...); }, args);
  }
  m.def("bind_blas", &BindBlas, py::arg("path"), py::arg("prefix"));
  m.def("blas_bound", &BlasBound);
  m.def("blas_info", &BlasInfo);
  m.def("tune_malloc", &TuneMalloc);
  m.def("isa", []() { return std::string(Kernels().name); });
  m.def("available_isas", &AvailableIsas);
  m.def("select_isa", &SelectIsa);
  m.def("max_threads", &MaxThreads);
  m.def("have_openmp", &HaveOpenMP);
  m.def("min_work_per_thread", &MinWorkPerThread);
  m.def("set_min_work_per_thread", &SetMinWorkPerThread);
  // the one-thread stretch after a contended team call (threading.hpp)
  m.def("choose_team", &ChooseTeam, py::arg("requested"), py::arg("blocks"), py::arg("work"));
  m.def("note_team_call", &NoteTeamCall, py::arg("contended"));
  m.def("solo_calls_left", &SoloCallsLeft);
  m.def("solo_calls_taken", &SoloCallsTaken);
  m.def("set_team_backoff", &SetTeamBackoff, py::arg("on"));
  m.def("team_backoff", &TeamBackoff);
  // the cache sizes and the blocks derived from them (tuning.hpp)
  m.def("tuning", []() {
    const Tuning& t = Tune();
    py::dict d;
    d["l1d_bytes"] = t.caches.l1d;
    d["l2_bytes"] = t.caches.l2;
    d["l3_bytes"] = t.caches.l3;
    d["l1d_from"] = t.caches.l1d_from;
    d["l2_from"] = t.caches.l2_from;
    d["l3_from"] = t.caches.l3_from;
    d["tape_ask_bytes"] = t.tape_ask_bytes;
    d["proj_chunk_bytes"] = t.proj_chunk_bytes;
    d["proj_panel_bytes"] = t.proj_panel_bytes;
    d["gemm_chunk_bytes"] = t.gemm_chunk_bytes;
    d["fused_l2_bytes"] = t.fused_l2_bytes;
    d["fused_l3_bytes"] = t.fused_l3_bytes;
    d["direct_keep_bytes"] = t.direct_keep_bytes;
    d["direct_max_batch"] = t.direct_max_batch;
    d["direct_max_rows"] = t.direct_max_rows;
    d["min_work_per_thread"] = t.min_work_per_thread;
    d["team_min_fmas"] = t.team_min_fmas;
    d["spin_ns"] = t.spin_ns;
    return d;
  });
  m.def("detected_caches", []() {
    const CacheSizes c = DetectCaches();
    return py::make_tuple(c.l1d, c.l2, c.l3, c.l1d_from, c.l2_from, c.l3_from);
  });
  m.def("retune", [](int64_t l1d, int64_t l2, int64_t l3) {
    if (l1d < 0 || l2 < 0 || l3 < 0) throw py::value_error("retune: cache sizes must be >= 0 bytes (0: detected)");
    Retune(l1d, l2, l3);
  }, py::arg("l1d_bytes") = 0, py::arg("l2_bytes") = 0, py::arg("l3_bytes") = 0);
  // how the backward's large products are made (tuning.hpp: GemmPath)
  m.def("set_gemm_path", [](const std::string& p) {
    if (p == "auto") SetGemmPath(GemmPath::kAuto);
    else if (p == "own") SetGemmPath(GemmPath::kOwn);
    else if (p == "blas") SetGemmPath(GemmPath::kBlas);
    else throw py::value_error("gemm path must be 'auto', 'own' or 'blas', got '" + p + "'");
  }, py::arg("path"));
  m.def("gemm_path", []() {
    const GemmPath p = GetGemmPath();
    return std::string(p == GemmPath::kOwn ? "own" : p == GemmPath::kBlas ? "blas" : "auto");
  });
  m.def("gemm_choices", &GemmChoices);
  m.def("clear_gemm_choices", &ClearGemmChoices);
  m.attr("MAX_DELAY") = py::int_(kMaxDelay);
  m.attr("MAX_STEP") = py::int_(kMaxStep);
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
