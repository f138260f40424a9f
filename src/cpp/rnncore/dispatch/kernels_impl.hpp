// One instruction set's kernels. A kernels_<isa>.cpp defines RNNCORE_ISA_NS,
// RNNCORE_VEC_HEADER and RNNCORE_TABLE_FN, then includes this file: the driver
// and cells compile here with that unit's flags, inside their own namespace so
// no inline function of one ISA can stand in for another's at link time.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "rnncore/api.hpp"
#include "rnncore/gemm.hpp"
#include "rnncore/threading.hpp"
#include "rnncore/tuning.hpp"
#include "rnncore/simd/tanh_rational.hpp"

namespace rnncore {
namespace RNNCORE_ISA_NS {
#include RNNCORE_VEC_HEADER
#include "rnncore/driver.hpp"

void FwdF32(const FwdArgs<float>& a) { Forward<float>(a); }
void FwdF64(const FwdArgs<double>& a) { Forward<double>(a); }
void BwdF32(const BwdArgs<float>& a) { Backward<float>(a); }
void BwdF64(const BwdArgs<double>& a) { Backward<double>(a); }
}  // namespace RNNCORE_ISA_NS

const KernelTable* RNNCORE_TABLE_FN() {
  static const KernelTable table{RNNCORE_ISA_ENUM, RNNCORE_ISA_NAME, &RNNCORE_ISA_NS::FwdF32,
                                 &RNNCORE_ISA_NS::FwdF64, &RNNCORE_ISA_NS::BwdF32,
                                 &RNNCORE_ISA_NS::BwdF64};
  return &table;
}
}  // namespace rnncore
