/**
 * Element types miniseq knows. Indices (token ids, targets) are int32. bfloat16 is for GPU
 * backends and memory plans; the CPU backend computes in float32 and float64.
 */
export type DType = "float32" | "float64" | "int32" | "bfloat16"

export type HostArray = Float32Array | Float64Array | Int32Array

export const bytesPerElement: Record<DType, number> = { float32: 4, float64: 8, int32: 4, bfloat16: 2 }

export const isFloat = (d: DType): boolean => d !== "int32"

export function hostArray(dtype: DType, size: number): HostArray {
  switch (dtype) {
    case "float32":
      return new Float32Array(size)
    case "float64":
      return new Float64Array(size)
    case "int32":
      return new Int32Array(size)
    case "bfloat16":
      throw new Error(
        "bfloat16 has no host array here: the CPU backend computes in float32 or float64 (bfloat16 is for GPU backends and memory plans)",
      )
  }
}

export function dtypeOf(a: HostArray): DType {
  if (a instanceof Float32Array) return "float32"
  if (a instanceof Float64Array) return "float64"
  return "int32"
}

/** Gradients of weights are accumulated in at least float32 (never in a narrower type). */
export const accumulatorDType = (d: DType): DType => (d === "float64" ? "float64" : d === "int32" ? "int32" : "float32")

/** The wider of two float dtypes (bfloat16 < float32 < float64). */
export const wider = (a: DType, b: DType): DType => (bytesPerElement[a] >= bytesPerElement[b] ? a : b)
