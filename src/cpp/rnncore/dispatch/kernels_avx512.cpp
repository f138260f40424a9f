// AVX-512 (F, DQ) kernels: this unit alone is built with the AVX-512 flags.
#include <immintrin.h>
#define RNNCORE_ISA_NS avx512
#define RNNCORE_ISA_ENUM Isa::kAvx512
#define RNNCORE_ISA_NAME "avx512"
#define RNNCORE_VEC_HEADER "rnncore/simd/vec_avx512.hpp"
#define RNNCORE_TABLE_FN Avx512Kernels
#include "rnncore/dispatch/kernels_impl.hpp"
