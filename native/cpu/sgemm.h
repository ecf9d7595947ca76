// The CPU addon's float32 GEMM: C (+)= op(A)·op(B) over strided operands (element strides), one
// thread. Packed (Goto/BLIS: A in MR-row panels, B in NR-column panels) and register blocked, with
// an AVX-512 and an AVX2+FMA micro-kernel chosen at run time by cpuid.
#pragma once
#include <cstdint>

namespace miniseq_cpu {

/** C[i·ldc + j] = (accumulate ? C[i·ldc + j] : 0) + Σ_p A[i·rsA + p·csA] · B[p·rsB + j·csB]. */
void sgemm(const float* A, int64_t rsA, int64_t csA, const float* B, int64_t rsB, int64_t csB, float* C,
           int64_t ldc, int m, int n, int k, bool accumulate);

/** The micro-kernel in use: "avx512", "avx2" or "none" (then sgemm is the portable loop). */
const char* sgemmKernel();

/** The micro-kernel's tile, rows × columns: a split of C into blocks at these multiples wastes none of it. */
void sgemmTile(int* rows, int* cols);

}  // namespace miniseq_cpu
