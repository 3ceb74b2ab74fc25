//! Resource alarms, as RabbitMQ's: free disk under the data directory below
//! `--disk-free-limit`, or the broker's resident memory above `--memory-high-watermark`
//! of RAM. While an alarm is on, connections that publish get `connection.blocked` (when
//! they announced the capability) and are not read; consumers keep draining. Nothing is
//! lost or half-written: a blocked publisher simply waits in its socket buffer.
//!
//! Owns only the measurements; the server decides whom to block.

use std::fs;
use std::path::Path;

/// Free bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_disk(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of
    // the right type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0 means the struct was initialised.
    let st = unsafe { st.assume_init() };
    // The field widths differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(avail.saturating_mul(frsize))
}

/// Hands the pages that the allocator holds free back to the system (glibc's
/// `malloc_trim`: also the free pages in the middle of the heap, which a freed backlog
/// leaves behind when a few live allocations pin the heap's top). Returns whether
/// anything was released. A no-op on other C libraries.
pub fn give_back_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own
        // free lists (we are single-threaded, and it takes the arena locks anyway).
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's resident set size in bytes (Linux /proc).
pub fn rss() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// Total RAM in bytes (Linux /proc/meminfo), for defaults given as a fraction of it.
pub fn total_ram() -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Which alarm is on, if any; the text is RabbitMQ's `connection.blocked` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    Disk,
    Memory,
}

impl Alarm {
    pub fn reason(self) -> &'static str {
        match self {
            Alarm::Disk => "low on disk",
            Alarm::Memory => "low on memory",
        }
    }
}

/// Evaluates both alarms; disk wins when both are on.
pub fn check(data_dir: &Path, disk_free_limit: u64, memory_limit: u64) -> Option<Alarm> {
    if disk_free_limit > 0 && free_disk(data_dir).is_some_and(|f| f < disk_free_limit) {
        return Some(Alarm::Disk);
    }
    if memory_limit > 0 && rss().is_some_and(|r| r > memory_limit) {
        return Some(Alarm::Memory);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_work_here() {
        assert!(free_disk(Path::new("/")).is_some_and(|f| f > 0));
        assert!(rss().is_some_and(|r| r > 0));
        assert!(total_ram().is_some_and(|r| r > 0));
        assert!(free_disk(Path::new("/no/such/dir")).is_none());
    }

    #[test]
    fn limits_trigger_alarms() {
        let here = Path::new(".");
        assert_eq!(check(here, u64::MAX, 0), Some(Alarm::Disk));
        assert_eq!(check(here, 0, 1), Some(Alarm::Memory));
        assert_eq!(check(here, 1, u64::MAX), None);
    }
}
