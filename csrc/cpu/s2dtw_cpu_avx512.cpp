// The SIMD kernels for AVX-512 (F, DQ, VL) + FMA: 8 doubles per register.
#define S2DTW_SIMD_NS avx512
#define S2DTW_NATIVE_DOUBLES 8
#include "simd_per_isa.h"
