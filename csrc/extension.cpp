// The Python face of peftplug._C: what was built. The ops themselves register with the
// dispatcher (TORCH_LIBRARY_IMPL in csrc/ops/*), never through pybind11.
// Only pybind11 and the dispatcher: torch/extension.h would triple the build time.
#include <ATen/core/dispatch/Dispatcher.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/headeronly/version.h>

#include <optional>
#include <string>

#include "cpu_capability.h"

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

pybind11::list names(const std::vector<peftplug::CpuCapability>& capabilities) {
  pybind11::list result;
  for (const auto capability : capabilities) result.append(peftplug::capability_name(capability));
  return result;
}

// The CPU kernels' instruction sets: compiled, runnable here, and the one in use.
pybind11::dict cpu_capabilities() {
  pybind11::dict info;
  info["compiled"] = names(peftplug::compiled_cpu_capabilities());
  info["supported"] = names(peftplug::supported_cpu_capabilities());
  info["active"] = peftplug::capability_name(peftplug::active_cpu_capability());
  return info;
}

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef PEFTPLUG_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["kernels"] = registered_kernels();
  info["cpu_capabilities"] = cpu_capabilities();
  info["torch"] = TORCH_VERSION;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "peftplug's compiled kernels (registered as torch.ops.peftplug.*)";
  module.def("build_info", &build_info, "What this build contains: kernels, CPU paths, CUDA, torch version");
  module.def("cpu_capabilities", &cpu_capabilities, "The CPU kernels' instruction sets: compiled, supported, active");
  module.def("set_cpu_capability", &peftplug::set_cpu_capability, pybind11::arg("name"),
             "Force the CPU kernels' instruction set ('default', 'avx2', 'avx512'); None restores the choice");
}
