/**
 * miniseq for browsers (the `browser` condition of `miniseq`'s exports, which bundlers pick):
 * everything in `portable.ts`, without the Node-only file I/O of `index.ts`. Train on WebGPU with
 * `webgpuBackendLayer` from `miniseq/webgpu` (its browser entry takes the device from
 * `navigator.gpu`) or on the CPU with `cpuBackendLayer`.
 */
export * from "./portable.js"
