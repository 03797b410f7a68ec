// The SIMD kernels for AVX2 + FMA: 4 doubles per register.
#define S2DTW_SIMD_NS avx2
#define S2DTW_NATIVE_DOUBLES 4
#include "simd_per_isa.h"
