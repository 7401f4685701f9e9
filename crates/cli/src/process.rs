//! Process-wide settings made first thing in `main`, before any other thread exists: the
//! allocator's tuning, the size of candle's CPU pool and the SIGPIPE disposition.

/// Keep freed memory in the process instead of returning it to the kernel: a training step
/// allocates and frees the same large buffers every step, and re-faulting fresh zeroed pages
/// cost about 30 % of a step at width 0.25 (measured with perf: `clear_page_erms`,
/// `exc_page_fault`). Memory stays bounded by the step's peak. glibc caps the mmap threshold at
/// 32 MB, so blocks above it (width 1.0's first-stage activations: 33.5 MB at batch 128) were
/// still fresh mappings every step — 5 % of the step in page faults — until mmap was switched
/// off for the heap's blocks altogether: width 1.0 batch 128 20.2-23.3 → 23.8-24.0 images/s,
/// batch 256 21.9-22.7 → 24.6, the same peak memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// candle runs its element-wise CPU ops on a pool of its own (`CANDLE_NUM_THREADS`, by default a
/// thread per core), whose idle workers spin (25 000 rounds) after every op before they sleep;
/// infomax's heavy work — the encoder, the heads' products, the optimiser — runs on rayon's
/// pool, and what is left to candle's (the loss, the projector's element-wise steps, autograd's
/// gradient sums) is small tensors, where those spinning workers took cores from rayon's
/// threads. One thread for candle's pool unless the user sets it: `bench train-step`, alternated
/// runs, width 0.25 batch 128 305.4 → 330.1 images/s (medians of four), width 0.5 103.4 → 106.6
/// and 106.1 → 107.8 (five and four).
pub fn candle_elementwise_on_one_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any candle op (its pool reads the variable once, when first used) and before
        // any other thread exists.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Leave quietly when stdout's reader goes away (`infomax compare | head`), as Unix tools do:
/// Rust ignores SIGPIPE, so every later `print!` would panic on the broken pipe instead.
#[cfg(unix)]
pub fn default_sigpipe() {
    // SAFETY: restores the default disposition of one signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
pub fn default_sigpipe() {}
