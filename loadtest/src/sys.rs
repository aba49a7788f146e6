//! What the generator reads from the operating system: its own CPU time, a broker's resident
//! memory, the machine's description, and the open-files limit. Linux `/proc`; elsewhere the
//! figures are absent rather than wrong.

use std::fs;

use serde::Serialize;

/// `/proc` reports CPU time in USER_HZ ticks, which the Linux ABI fixes at 100 per second.
const USER_HZ: f64 = 100.0;

/// CPU time used by this process (all its threads), in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuTimes {
    /// User time.
    pub user: f64,
    /// System time.
    pub system: f64,
}

impl CpuTimes {
    /// User plus system.
    pub fn total(&self) -> f64 {
        self.user + self.system
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// This process's CPU time so far, from `/proc/self/stat` (fields 14 and 15).
pub fn cpu_times() -> Option<CpuTimes> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after it start past its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(CpuTimes {
        user: user as f64 / USER_HZ,
        system: system as f64 / USER_HZ,
    })
}

/// Resident set size of process `pid` in KiB, from `/proc/PID/status` (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// CPU model name.
    pub cpu: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
}

impl Machine {
    /// Describes this machine.
    pub fn current() -> Self {
        let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
        let cpu = fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            kernel: read("/proc/sys/kernel/osrelease"),
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// Raises the soft open-files limit to the hard limit so a run can hold many connections;
/// returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => {
            if rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_rss() {
        if cfg!(target_os = "linux") {
            assert!(cpu_times().is_some());
            assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        }
    }
}
