#include "cpu_capability.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace peftplug {
namespace {

constexpr const char* kEnvironmentVariable = "PEFTPLUG_CPU_CAPABILITY";

// What the CPU (and the OS, which must save the wider registers) offers for the flags setup.py
// compiles each path with. The compiler's CPUID query, not ATen's: its API differs between
// torch releases, and the extension builds against each.
bool cpu_can_run(CpuCapability capability) {
  switch (capability) {
    case CpuCapability::Default:
      return true;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case CpuCapability::Avx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
             __builtin_cpu_supports("bmi2");
    case CpuCapability::Avx512:
      return cpu_can_run(CpuCapability::Avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
#endif
    default:
      return false;
  }
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
