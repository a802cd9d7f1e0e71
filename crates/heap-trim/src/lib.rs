//! Portico's calls into the C allocator, kept in this crate so that the gateway itself stays
//! `#![forbid(unsafe_code)]`.
//!
//! - [`trim`] returns freed heap memory to the operating system. glibc's allocator keeps memory freed in the
//!   middle of its heaps: after thousands of connections close, the process's resident size stays at its peak.
//!   `malloc_trim` hands those free pages back. On other C libraries it does nothing.
//! - [`Allocator`] is the binary's global allocator: glibc's, with small over-aligned blocks (tokio's tasks)
//!   taken by a padded `malloc` instead of the slow `posix_memalign` (see [`aligned`]).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod aligned;

pub use aligned::Allocator;

/// Asks the allocator to release free heap memory to the operating system. Returns whether any was released.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes a plain integer (0: keep no padding), works on the allocator's own state
        // under the allocator's locks, and may be called from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// Reads this process's resident set size in KiB from /proc.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_fragmented_memory_goes_back() {
        // 64 MiB in 16 KiB blocks (below glibc's mmap threshold, so they live on the heap), touched so they are
        // resident; then every block but one in 64 is freed, leaving holes the allocator would otherwise keep.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8 | 1; 16 << 10]).collect();
        let full = rss_kib();
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter(|(i, _)| i % 64 == 0)
            .map(|(_, b)| b)
            .collect();
        let before = rss_kib();
        assert!(super::trim(), "nothing released");
        let after = rss_kib();
        assert!(
            after + 32 * 1024 < before,
            "RSS {full} KiB full, {before} KiB after free, {after} KiB after trim"
        );
        assert_eq!(kept.len(), 64);
        assert!(kept.iter().all(|b| b[0] & 1 == 1));
    }
}
