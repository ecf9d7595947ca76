// cuBLAS, loaded at run time with dlopen: the addon links only against the CUDA runtime
// (statically), so it builds on machines without cuBLAS and reports a missing cuBLAS as a
// reason instead of failing to load. Only the handful of entry points miniseq uses are
// declared here, with the values of cublas_api.h / library_types.h (stable across cuBLAS 11–13).
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

namespace miniseq {

using cublasStatus = int;
using cublasHandle = void*;

enum : int { CUBLAS_OP_N_ = 0, CUBLAS_OP_T_ = 1 };
enum : int { CUDA_R_32F_ = 0, CUDA_R_64F_ = 1, CUDA_R_16BF_ = 14 };
enum : int { CUBLAS_COMPUTE_32F_ = 68, CUBLAS_COMPUTE_64F_ = 70, CUBLAS_COMPUTE_32F_FAST_TF32_ = 77 };
enum : int { CUBLAS_GEMM_DEFAULT_ = -1 };

struct Cublas {
  cublasStatus (*create)(cublasHandle*) = nullptr;
  cublasStatus (*destroy)(cublasHandle) = nullptr;
  cublasStatus (*setStream)(cublasHandle, cudaStream_t) = nullptr;
  cublasStatus (*getVersion)(cublasHandle, int*) = nullptr;
  const char* (*statusString)(cublasStatus) = nullptr;
  cublasStatus (*gemmStridedBatchedEx)(cublasHandle, int transa, int transb, int m, int n, int k, const void* alpha,
                                       const void* A, int Atype, int lda, long long strideA, const void* B, int Btype,
                                       int ldb, long long strideB, const void* beta, void* C, int Ctype, int ldc,
                                       long long strideC, int batchCount, int computeType, int algo) = nullptr;
  std::string path;  // the library that was loaded

  // Loads libcublasLt and libcublas (.so.13) from the first place that has them: $MINISEQ_CUBLAS_DIR,
  // the loader's search path, $CUDA_HOME/lib64, the usual CUDA install folders, then the
  // nvidia-cublas wheels of a Python environment. On failure returns false and sets `error` to
  // every place tried with dlerror's answer.
  bool load(std::string& error);
  std::string describe(cublasStatus s) const;
};

}  // namespace miniseq
