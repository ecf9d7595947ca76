/**
 * Stands in for the "webgpu" package (Dawn) in the bundles scripts/cuda-device.sh makes for the
 * GPU machine, which has Node but no node_modules: the WebGPU backend is then unavailable there
 * and says so, and a suite that runs every backend skips its WebGPU cases.
 */
export const globals = {}
export function create(): never {
  throw new Error("the webgpu package (Dawn) is not part of this bundle")
}
