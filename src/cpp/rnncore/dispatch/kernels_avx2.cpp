// AVX2 + FMA kernels: this unit alone is built with -mavx2 -mfma.
#include <immintrin.h>
#define RNNCORE_ISA_NS avx2
#define RNNCORE_ISA_ENUM Isa::kAvx2
#define RNNCORE_ISA_NAME "avx2"
#define RNNCORE_VEC_HEADER "rnncore/simd/vec_avx2.hpp"
#define RNNCORE_TABLE_FN Avx2Kernels
#include "rnncore/dispatch/kernels_impl.hpp"
