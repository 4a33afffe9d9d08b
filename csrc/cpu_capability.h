// The CPU instruction sets the kernels were compiled for, and the one they run with.
//
// Kernel files under csrc/ops/<op>/cpu/isa/ are compiled once per instruction set (setup.py:
// DEFAULT everywhere, AVX2 and AVX512 on x86-64), each copy in its own namespace named by
// CPU_CAPABILITY, as ATen does with its own kernels. The op picks the copy for
// active_cpu_capability(): the best one this CPU supports, or the one PEFTPLUG_CPU_CAPABILITY
// (default | avx2 | avx512) or set_cpu_capability() forces.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace peftplug {

enum class CpuCapability { Default = 0, Avx2 = 1, Avx512 = 2 };

// "default", "avx2", "avx512".
std::string capability_name(CpuCapability capability);

// Compiled into this build, in increasing order.
std::vector<CpuCapability> compiled_cpu_capabilities();

// Compiled and runnable on this CPU (its features read at run time with CPUID).
std::vector<CpuCapability> supported_cpu_capabilities();

// The path the kernels take now. Throws std::invalid_argument, naming the choices, when
// PEFTPLUG_CPU_CAPABILITY names a path that is unknown or that this CPU cannot run.
CpuCapability active_cpu_capability();

// Forces a path by name (same rules as the environment variable); nullopt restores the choice
// made from the environment and the CPU.
void set_cpu_capability(const std::optional<std::string>& name);

// The entry of `tables` (one kernel table per CpuCapability; nullptr where not compiled) for
// the active capability.
template <typename Table>
const Table& active_table(const std::array<const Table*, 3>& tables) {
  return *tables[static_cast<int>(active_cpu_capability())];
}

}  // namespace peftplug

// Declares the copies of kernel table `const Type name` that an isa/ file defines in namespaces
// DEFAULT, AVX2 and AVX512 (the last two on x86-64 builds only; PEFTPLUG_ACTIVE_CPU_KERNELS
// refers only to those built).
#define PEFTPLUG_DECLARE_CPU_KERNELS(Type, name) \
  namespace DEFAULT {                            \
  extern const Type name;                        \
  }                                              \
  namespace AVX2 {                               \
  extern const Type name;                        \
  }                                              \
  namespace AVX512 {                             \
  extern const Type name;                        \
  }

// The copy of kernel table `name` for the active instruction set, where an isa/ file defines
// `name` in namespaces DEFAULT, AVX2 and AVX512 (the last two on x86-64 builds only).
#ifdef PEFTPLUG_BUILT_AVX2
#define PEFTPLUG_AVX2_TABLE(name) &AVX2::name
#else
#define PEFTPLUG_AVX2_TABLE(name) nullptr
#endif
#ifdef PEFTPLUG_BUILT_AVX512
#define PEFTPLUG_AVX512_TABLE(name) &AVX512::name
#else
#define PEFTPLUG_AVX512_TABLE(name) nullptr
#endif
#define PEFTPLUG_ACTIVE_CPU_KERNELS(Type, name) \
  ::peftplug::active_table<Type>({&DEFAULT::name, PEFTPLUG_AVX2_TABLE(name), PEFTPLUG_AVX512_TABLE(name)})
