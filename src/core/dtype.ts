/** Element types miniseq knows. Indices (token ids, targets) are int32. */
export type DType = "float32" | "float64" | "int32"

export type HostArray = Float32Array | Float64Array | Int32Array

export const bytesPerElement: Record<DType, number> = { float32: 4, float64: 8, int32: 4 }

export const isFloat = (d: DType): boolean => d !== "int32"

export function hostArray(dtype: DType, size: number): HostArray {
  switch (dtype) {
    case "float32": return new Float32Array(size)
    case "float64": return new Float64Array(size)
    case "int32": return new Int32Array(size)
  }
}

export function dtypeOf(a: HostArray): DType {
  if (a instanceof Float32Array) return "float32"
  if (a instanceof Float64Array) return "float64"
  return "int32"
}

/** Gradients of weights are accumulated in at least float32 (never in a narrower type). */
export const accumulatorDType = (d: DType): DType => (d === "float64" ? "float64" : "float32")
