# The CUDA backend's addon, build/Release/miniseq_cuda.node. Run through native/build.mjs (the
# package's `install` script), which finds nvcc, sets MINISEQ_CUDA_HOME, and turns a failed
# build into a one-line notice instead of a failed install. The .cu kernels are compiled by a
# gyp rule with nvcc (sm_90 machine code plus compute_90 PTX) and linked with the C++ sources;
# the CUDA runtime is linked statically, and cuBLAS is loaded at run time (native/src/cublas.cc),
# so the addon needs neither libcudart.so nor cuBLAS to build or load.
{
  "variables": {
    "cuda_home%": "<!(node -p \"process.env.MINISEQ_CUDA_HOME || '/usr/local/cuda'\")",
    "cuda_gencode%": "arch=compute_90,code=[sm_90,compute_90]",
    # Kernels that use wgmma / setmaxnreg (sm_90a only): their own target, so that only they
    # get this machine code; attentionForward picks them at run time on a 9.0 device only.
    "cuda_gencode_hopper%": "arch=compute_90a,code=sm_90a",
  },
  "targets": [
    {
      "target_name": "miniseq_cuda_hopper",
      "type": "static_library",
      "sources": ["native/kernels/attention_hopper.cu", "native/kernels/attention_hopper_backward.cu", "native/kernels/attention_hopper_backward_fused.cu"],
      "include_dirs": ["<(cuda_home)/include"],
      "rules": [
        {
          "rule_name": "nvcc_hopper",
          "extension": "cu",
          "inputs": ["native/kernels/common.cuh", "native/kernels/kernels.h", "native/kernels/attention.cuh", "native/kernels/attention_hopper.cuh", "native/kernels/attention_hopper_dq_layout.cuh", "native/kernels/attention_hopper_grid.cuh", "native/kernels/attention_hopper_tiles.cuh"],
          "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
          "action": [
            "<(cuda_home)/bin/nvcc", "-c", "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
            "-gencode", "<(cuda_gencode_hopper)", "<(RULE_INPUT_PATH)", "-o", "<@(_outputs)",
          ],
          "message": "nvcc (sm_90a) <(RULE_INPUT_PATH)",
          "process_outputs_as_sources": 1,
        }
      ],
    },
    {
      "target_name": "miniseq_cuda",
      "dependencies": ["miniseq_cuda_hopper"],
      "sources": [
        "native/src/addon.cc",
        "native/src/device.cc",
        "native/src/cublas.cc",
        "native/kernels/binary.cu",
        "native/kernels/cast.cu",
        "native/kernels/copy.cu",
        "native/kernels/fill.cu",
        "native/kernels/index.cu",
        "native/kernels/reduce.cu",
        "native/kernels/unary.cu",
        "native/kernels/softmax.cu",
        "native/kernels/activation.cu",
        "native/kernels/optimizer.cu",
        "native/kernels/norm.cu",
        "native/kernels/rope.cu",
        "native/kernels/attention.cu",
        "native/kernels/attention_backward.cu",
        "native/kernels/attention_mma.cu",
        "native/kernels/attention_mma_backward.cu",
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(cuda_home)/include",
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-fexceptions", "-O2", "-ffp-contract=off", "-fno-math-errno"],
      "libraries": [
        "-L<(cuda_home)/lib64",
        "-L<(cuda_home)/targets/x86_64-linux/lib",
        "-lcudart_static",
        "-ldl",
        "-lrt",
        "-lpthread",
      ],
      "rules": [
        {
          "rule_name": "nvcc",
          "extension": "cu",
          "inputs": ["native/kernels/common.cuh", "native/kernels/kernels.h"],
          "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).o"],
          "action": [
            "<(cuda_home)/bin/nvcc", "-c", "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
            "-gencode", "<(cuda_gencode)", "<(RULE_INPUT_PATH)", "-o", "<@(_outputs)",
          ],
          "message": "nvcc <(RULE_INPUT_PATH)",
          "process_outputs_as_sources": 1,
        }
      ],
    }
  ],
}
