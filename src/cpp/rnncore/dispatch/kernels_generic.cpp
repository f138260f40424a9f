// The portable kernels: baseline flags, one lane, runs on every CPU.
#define RNNCORE_ISA_NS generic
#define RNNCORE_ISA_ENUM Isa::kGeneric
#define RNNCORE_ISA_NAME "generic"
#define RNNCORE_VEC_HEADER "rnncore/simd/vec_generic.hpp"
#define RNNCORE_TABLE_FN GenericKernels
#include "rnncore/dispatch/kernels_impl.hpp"
