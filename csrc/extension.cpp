// The Python face of peftplug._C: what was built. The ops themselves register with the
// dispatcher (TORCH_LIBRARY_IMPL in csrc/ops/*), never through pybind11.
// Only pybind11 and the dispatcher: torch/extension.h would triple the build time.
#include <ATen/core/dispatch/Dispatcher.h>
#include <pybind11/pybind11.h>
#include <torch/headeronly/version.h>

#include <string>

namespace peftplug {
bool nf4_cpu_is_vectorised();
}

namespace {

// "<op>:<device>" for every peftplug op with a kernel registered for that device key.
pybind11::list registered_kernels() {
  pybind11::list kernels;
  auto& dispatcher = c10::Dispatcher::singleton();
  for (const auto& name : dispatcher.getAllOpNames()) {
    if (name.name.rfind("peftplug::", 0) != 0) continue;
    const auto handle = dispatcher.findOp(name);
    if (!handle) continue;
    const std::string op = name.name.substr(10) + (name.overload_name.empty() ? "" : "." + name.overload_name);
    if (handle->hasKernelForDispatchKey(c10::DispatchKey::CPU)) kernels.append(op + ":cpu");
    if (handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) kernels.append(op + ":cuda");
  }
  kernels.attr("sort")();
  return kernels;
}

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef PEFTPLUG_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["kernels"] = registered_kernels();
  info["cpu_simd"] = peftplug::nf4_cpu_is_vectorised() ? "avx512" : "scalar";
  info["torch"] = TORCH_VERSION;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "peftplug's compiled kernels (registered as torch.ops.peftplug.*)";
  module.def("build_info", &build_info, "What this build contains: kernels, SIMD, CUDA, torch version");
}
