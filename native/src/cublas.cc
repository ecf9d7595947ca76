#include "cublas.h"

#include <dlfcn.h>
#include <glob.h>

#include <cstdlib>

namespace miniseq {

namespace {

template <typename F> bool bind(void* lib, const char* name, F& fn, std::string& error) {
  dlerror();
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (fn == nullptr) {
    const char* why = dlerror();
    error = std::string("symbol ") + name + " missing: " + (why ? why : "?");
  }
  return fn != nullptr;
}

std::vector<std::string> candidateDirs() {
  std::vector<std::string> dirs;
  if (const char* d = std::getenv("MINISEQ_CUBLAS_DIR")) dirs.emplace_back(d);
  dirs.emplace_back("");  // the loader's own search: LD_LIBRARY_PATH, ld.so.cache
  for (const char* env : {"CUDA_HOME", "CUDA_PATH"})
    if (const char* d = std::getenv(env)) dirs.push_back(std::string(d) + "/lib64");
  dirs.emplace_back("/usr/local/cuda/lib64");
  dirs.emplace_back("/usr/local/cuda-13/lib64");
  dirs.emplace_back("/usr/local/cuda/targets/x86_64-linux/lib");
  dirs.emplace_back("/usr/lib/x86_64-linux-gnu");
  // The NVIDIA wheels that PyTorch installs (nvidia-cublas), wherever a virtual environment is.
  for (const char* pattern : {"/opt/*/.venv/lib/python3*/site-packages/nvidia/cu13/lib",
                              "/opt/*/.venv/lib/python3*/site-packages/nvidia/cublas/lib",
                              "/usr/local/lib/python3*/dist-packages/nvidia/cu13/lib",
                              "/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib"}) {
    glob_t g{};
    if (glob(pattern, GLOB_ONLYDIR, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; i++) dirs.emplace_back(g.gl_pathv[i]);
    globfree(&g);
  }
  return dirs;
}

}  // namespace

bool Cublas::load(std::string& error) {
  std::string tried;
  void* lib = nullptr;
  for (const std::string& dir : candidateDirs()) {
    const std::string prefix = dir.empty() ? "" : dir + "/";
    // libcublas needs libcublasLt: loading it first from the same folder satisfies that need
    // even when the folder is not on the loader's path.
    dlopen((prefix + "libcublasLt.so.13").c_str(), RTLD_NOW | RTLD_GLOBAL);
    const std::string name = prefix + "libcublas.so.13";
    lib = dlopen(name.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (lib != nullptr) {
      path = name;
      break;
    }
    const char* why = dlerror();
    tried += (tried.empty() ? "" : "; ") + std::string(why ? why : name + ": not found");
  }
  if (lib == nullptr) {
    error = "libcublas.so.13 could not be loaded (" + tried + ")";
    return false;
  }
  std::string missing;
  if (!bind(lib, "cublasCreate_v2", create, missing) || !bind(lib, "cublasDestroy_v2", destroy, missing) ||
      !bind(lib, "cublasSetStream_v2", setStream, missing) || !bind(lib, "cublasGetVersion_v2", getVersion, missing) ||
      !bind(lib, "cublasGetStatusString", statusString, missing) ||
      !bind(lib, "cublasGemmStridedBatchedEx", gemmStridedBatchedEx, missing)) {
    error = path + ": " + missing;
    return false;
  }
  return true;
}

std::string Cublas::describe(cublasStatus s) const {
  const char* text = statusString != nullptr ? statusString(s) : nullptr;
  return text != nullptr ? std::string(text) + " (" + std::to_string(s) + ")" : "cuBLAS status " + std::to_string(s);
}

}  // namespace miniseq
