/** The WebGPU backend's argument checks: the shared ones (see ../checks.ts), for float32 only. */
import { kernelChecks } from "../checks.js"

export { describe } from "../checks.js"
export const { check, checkView, copyViews, counts, fail, floatOnly, int32Only, iotaLayout, matmulSizes, reduceSizes, sameDType, sameSize, scalarOrSize } = kernelChecks("webgpu", ["float32"])
