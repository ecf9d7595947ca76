/** The WebGPU backend's argument checks: the shared ones (see ../checks.ts), for float32 only. */
import { kernelChecks } from "../checks.js"

export { describe } from "../checks.js"
export const { check, checkView, counts, fail, floatOnly, int32Only, sameDType, sameSize, scalarOrSize } = kernelChecks("webgpu", ["float32"])
