#include "cpu_capability.h"

#include <ATen/cpu/Utils.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace peftplug {
namespace {

constexpr const char* kEnvironmentVariable = "PEFTPLUG_CPU_CAPABILITY";

bool has_features(std::initializer_list<const char*> names) {
  static const auto features = at::cpu::get_cpu_capabilities();
  for (const char* name : names) {
    const auto found = features.find(name);
    if (found == features.end() || !found->second.isBool() || !found->second.toBool()) return false;
  }
  return true;
}

// What the CPU must offer for the flags setup.py compiles each path with.
bool cpu_can_run(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::Default:
      return true;
    case CpuCapability::Avx2:
      return has_features({"avx2", "fma3", "f16c", "bmi2"});
    case CpuCapability::Avx512:
      return cpu_can_run(CpuCapability::Avx2) &&
             has_features({"avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"});
  }
  return false;
}

std::string joined_names(const std::vector<CpuCapability>& capabilities) {
  std::string text;
  for (const CpuCapability capability : capabilities)
    text += (text.empty() ? "" : ", ") + capability_name(capability);
  return text;
}

CpuCapability parse(const std::string& name, const std::string& origin) {
  for (const CpuCapability capability : compiled_cpu_capabilities()) {
    if (capability_name(capability) != name) continue;
    if (!cpu_can_run(capability))
      throw std::invalid_argument(origin + " asks for '" + name + "', which this CPU cannot run; it runs: " +
                                  joined_names(supported_cpu_capabilities()) + " (unset it to take the best)");
    return capability;
  }
  throw std::invalid_argument(origin + " asks for '" + name + "', which this build does not have; it has: " +
                              joined_names(compiled_cpu_capabilities()));
}

CpuCapability from_environment() {
  const char* value = std::getenv(kEnvironmentVariable);
  if (value != nullptr && *value != '\0')
    return parse(value, std::string(kEnvironmentVariable) + "=" + value);
  return supported_cpu_capabilities().back();
}

constexpr int kUnset = -1;
std::atomic<int> forced{kUnset};

}  // namespace

std::string capability_name(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::Default:
      return "default";
    case CpuCapability::Avx2:
      return "avx2";
    case CpuCapability::Avx512:
      return "avx512";
  }
  return "unknown";
}

std::vector<CpuCapability> compiled_cpu_capabilities() {
  return {CpuCapability::Default,
#ifdef PEFTPLUG_BUILT_AVX2
          CpuCapability::Avx2,
#endif
#ifdef PEFTPLUG_BUILT_AVX512
          CpuCapability::Avx512,
#endif
  };
}

std::vector<CpuCapability> supported_cpu_capabilities() {
  std::vector<CpuCapability> supported;
  for (const CpuCapability capability : compiled_cpu_capabilities())
    if (cpu_can_run(capability)) supported.push_back(capability);
  return supported;
}

CpuCapability active_cpu_capability() {
  const int chosen = forced.load(std::memory_order_relaxed);
  if (chosen != kUnset) return static_cast<CpuCapability>(chosen);
  static const CpuCapability initial = from_environment();  // throws again next call if invalid
  return initial;
}

void set_cpu_capability(const std::optional<std::string>& name) {
  forced.store(name ? static_cast<int>(parse(*name, "set_cpu_capability")) : kUnset,
               std::memory_order_relaxed);
}

}  // namespace peftplug
