// The warp-level PTX instructions the tensor-core attention kernels are built from
// (attention_mma.cuh says how they are combined), one small function each:
//
// - cp.async: 16 bytes global → shared memory without passing through registers, in groups that
//   a thread commits and later waits for, so a tile can load while the previous one is used.
// - ldmatrix .x4: four 8×8 bf16 matrices from shared memory, spread over the warp in the layout
//   of mma operands (optionally transposed on the way).
// - mma.sync m16n8k16: a warp multiplies a 16×16 bf16 A by a 16×8 bf16 B into 16×8 fp32.
//
// The m16n8k16 fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"), for lane l,
// g = l / 4 (the group) and t = l % 4 (the lane in the group); each .b32 register holds two
// bf16, the lower column (or k) in the low half:
//   A (16×16, row-major):   a0 = A[g][2t..2t+1]      a1 = A[g+8][2t..2t+1]
//                           a2 = A[g][2t+8..2t+9]    a3 = A[g+8][2t+8..2t+9]
//   B (16×8, k × n):        b0 = B[2t..2t+1][g]      b1 = B[2t+8..2t+9][g]
//   C, D (16×8, fp32):      c0, c1 = C[g][2t], C[g][2t+1]    c2, c3 = C[g+8][2t], C[g+8][2t+1]
#pragma once
#include "common.cuh"

namespace miniseq {
namespace attn {

__device__ __forceinline__ uint32_t sharedAddress(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// Copies 16 bytes src → dst (shared); when !valid it reads nothing and writes 16 zero bytes.
__device__ __forceinline__ void copyAsync16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedAddress(dst)), "l"(src), "r"(valid ? 16 : 0));
}

// Closes the group of this thread's copies issued since the last commit.
__device__ __forceinline__ void commitAsyncCopies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most PENDING of this thread's committed groups are still in flight. Other
// threads' copies are visible only after a __syncthreads() that follows every thread's wait.
template <int PENDING> __device__ __forceinline__ void waitAsyncCopies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
}

// ldmatrix .x4: lanes 8i .. 8i+7 give the addresses of the 8 rows (16 bytes each) of matrix i;
// lane l receives in m[i] row g of matrix i, columns 2t and 2t+1.
__device__ __forceinline__ void loadMatrices(uint32_t (&m)[4], const bf16* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(m[0]), "=r"(m[1]), "=r"(m[2]), "=r"(m[3])
               : "r"(sharedAddress(row)));
}

// The same, transposed: lane l receives in m[i] rows 2t and 2t+1 of matrix i, column g.
__device__ __forceinline__ void loadMatricesTransposed(uint32_t (&m)[4], const bf16* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(m[0]), "=r"(m[1]), "=r"(m[2]), "=r"(m[3])
               : "r"(sharedAddress(row)));
}

// d += A·B for one m16n8k16 tile: a the A fragment, b0 and b1 the B fragment.
__device__ __forceinline__ void mma16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace attn
}  // namespace miniseq
