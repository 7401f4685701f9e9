//! Facts about the environment stored with every run: the code version and the machine.

/// `infomax <crate version>+<git describe>` of the build.
pub fn code_version() -> String {
    format!("infomax {}+{}", env!("CARGO_PKG_VERSION"), env!("INFOMAX_GIT_DESCRIBE"))
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once([':', '=']))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// This machine's memory in bytes (`MemTotal`), where the OS reports it.
pub fn total_memory_bytes() -> Option<u64> {
    first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Refuse an allocation of `bytes` for `what` (a flag or a field) that this machine's memory
/// cannot hold: a clear error naming it and the bytes, instead of the allocator aborting.
pub fn check_fits(what: &str, bytes: u128) -> crate::Result<()> {
    match total_memory_bytes() {
        Some(total) if bytes > u128::from(total) => Err(crate::Error::Option {
            option: what.to_string(),
            what: format!(
                "needs {:.1} GB, more than this machine's {:.1} GB of memory",
                bytes as f64 / 1e9,
                total as f64 / 1e9
            ),
        }),
        _ => Ok(()),
    }
}

/// CPU model, usable threads, memory, OS and compute device, in one line.
pub fn describe_machine(device: &candle_core::Device) -> String {
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = total_memory_bytes()
        .map(|b| format!("{:.1} GiB", b as f64 / 1024.0 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown memory".into());
    let os = first_line_with("/etc/os-release", "PRETTY_NAME").unwrap_or_else(|| std::env::consts::OS.to_string());
    let dev = match device {
        candle_core::Device::Cpu => "cpu".to_string(),
        other => format!("{other:?}"),
    };
    format!("{cpu}, {threads} threads, {mem}, {os}, device {dev}")
}

/// The vector and matrix instruction sets that decide the CPU kernels' speed, as this CPU
/// reports them (`/proc/cpuinfo`'s flags): which of AVX2, FMA, AVX-512F, AVX512-BF16,
/// AVX512-FP16 and AMX's tiles and bf16 products are there.
pub const CPU_FEATURES: [&str; 7] = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"];

/// Those of [`CPU_FEATURES`] this CPU has, space-separated (`unknown` where the OS does not say).
pub fn cpu_features() -> String {
    let Some(flags) = first_line_with("/proc/cpuinfo", "flags") else { return "unknown".into() };
    let have: Vec<&str> = flags.split_whitespace().collect();
    let found: Vec<&str> = CPU_FEATURES.into_iter().filter(|f| have.contains(f)).collect();
    if found.is_empty() {
        "none of theirs".into()
    } else {
        found.join(" ")
    }
}

/// [`describe_machine`] with the CPU's [`cpu_features`], as benchmarks print it (a run's
/// recorded machine stays [`describe_machine`], which its time estimates match on).
pub fn describe_machine_for_bench(device: &candle_core::Device) -> String {
    format!("{}; CPU features: {}", describe_machine(device), cpu_features())
}

/// Peak resident set size of this process in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    first_line_with("/proc/self/status", "VmHWM")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}
