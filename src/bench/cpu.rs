//! CPU accounting from `/proc`, split between the servers and the load generators.
//!
//! The bench runs servers and clients in one process, on two tokio runtimes whose threads are
//! named [`SERVER_THREADS`] and [`CLIENT_THREADS`]. Server CPU is the whole process minus the
//! client threads and the main thread (which only orchestrates): subtracting, rather than summing
//! the server threads, also charges the server with threads it starts itself (the wasmtime epoch
//! ticker) and with threads that have already exited, whose time only the process total keeps.
//! The machine-wide figure from `/proc/stat` tells how much other processes took meanwhile, which
//! would skew the run.

use std::time::Instant;

use anyhow::Context;

/// Thread name of the runtime the servers under test run on.
pub const SERVER_THREADS: &str = "bench-server";
/// Thread name of the runtime the load generators run on.
pub const CLIENT_THREADS: &str = "bench-client";

/// Cumulative CPU time at one instant, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    process: u64,
    client: u64,
    /// Every CPU's non-idle time, machine-wide.
    machine: u64,
}

/// CPU used between two samples, in percent of one core (this machine's total is cores × 100).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUsage {
    pub server: f64,
    pub client: f64,
    pub total: f64,
    /// Other processes on the machine.
    pub others: f64,
    /// CPU seconds the server used in the interval.
    pub server_secs: f64,
}

/// Reads the process's and the client threads' CPU time now.
pub fn sample() -> anyhow::Result<CpuSample> {
    let at = Instant::now();
    let process =
        stat_ticks(&std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?)?;
    let pid = std::process::id().to_string();
    let mut client = 0;
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let Ok(entry) = entry else { continue };
        let dir = entry.path();
        let tid = entry.file_name();
        // A thread can exit between the listing and these reads; it then no longer counts.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else { continue };
        let is_client = tid.to_str() == Some(pid.as_str()) || comm.trim_end().starts_with(CLIENT_THREADS);
        if is_client && let Ok(stat) = std::fs::read_to_string(dir.join("stat")) {
            client += stat_ticks(&stat)?;
        }
    }
    let machine = machine_busy(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)?;
    Ok(CpuSample { at, process, client, machine })
}

/// What was used from `a` to `b`.
pub fn usage(a: &CpuSample, b: &CpuSample) -> CpuUsage {
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let hz = clock_ticks_per_sec();
    let process = b.process.saturating_sub(a.process) as f64 / hz;
    let client = (b.client.saturating_sub(a.client) as f64 / hz).min(process);
    let server = process - client;
    let others = (b.machine.saturating_sub(a.machine) as f64 / hz - process).max(0.0);
    CpuUsage {
        server: 100.0 * server / wall,
        client: 100.0 * client / wall,
        total: 100.0 * process / wall,
        others: 100.0 * others / wall,
        server_secs: server,
    }
}

/// Non-idle time of all CPUs from `/proc/stat`'s first line: user, nice, system, irq, softirq
/// and steal (guest time is already inside user).
fn machine_busy(stat: &str) -> anyhow::Result<u64> {
    let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    anyhow::ensure!(f.len() >= 8, "a short cpu line in /proc/stat");
    Ok(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// `utime + stime` from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> anyhow::Result<u64> {
    Ok(stat_field(stat, 14)? + stat_field(stat, 15)?)
}

/// Numeric field `n` of proc(5)'s `stat` (1-based, as the manual counts). The command name
/// may hold spaces and parentheses, so fields are counted from the last `)`.
fn stat_field(stat: &str, n: usize) -> anyhow::Result<u64> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("a stat line without a command name")?;
    // After the name comes field 3 (state).
    rest.split_whitespace()
        .nth(n - 3)
        .context("a short stat line")?
        .parse::<u64>()
        .context("a stat field that is not a number")
}

/// CPU seconds used and resident bytes now of every process in process group `group` (a
/// server run as a child process, such as nginx and its workers).
pub fn group_usage(group: u32) -> anyhow::Result<(f64, u64)> {
    let (mut ticks, mut pages) = (0, 0);
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        // A process can exit between the listing and the read; it then no longer counts.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Field 5 is the process group, 24 the resident set in pages.
        if stat_field(&stat, 5)? == u64::from(group) {
            ticks += stat_ticks(&stat)?;
            pages += stat_field(&stat, 24)?;
        }
    }
    Ok((ticks as f64 / clock_ticks_per_sec(), pages * page_size()))
}

/// This process's resident bytes now.
pub fn own_rss() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    Ok(stat_field(&stat, 24)? * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// The number of CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Raises the soft limit on open files towards the hard limit, to at least `need` (as root,
/// the hard limit too when it is lower).
/// Returns the new soft limit.
pub fn raise_nofile(need: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= need {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < need {
        // Root (CAP_SYS_RESOURCE) may raise the hard limit itself.
        let raised = libc::rlimit { rlim_cur: need, rlim_max: need };
        // SAFETY: `raised` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(need);
        }
        anyhow::bail!(
            "this run needs about {need} open files (a socket at each end of every connection) but \
             the hard limit is {}; raise it (ulimit -Hn) or use fewer --viewers",
            lim.rlim_max
        );
    }
    let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
    // SAFETY: `raised` is a valid rlimit within the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(lim.rlim_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 5 0 0";
        assert_eq!(stat_ticks(line).unwrap(), 12);
    }

    #[test]
    fn machine_time_leaves_out_idle_and_iowait() {
        assert_eq!(machine_busy("cpu  1 2 3 100 200 4 5 6 7 8\ncpu0 1 2 3 4 5 6 7 8\n").unwrap(), 21);
    }

    #[test]
    fn this_process_can_be_sampled() {
        assert!(own_rss().unwrap() > 0);
        // SAFETY: getpgrp has no preconditions.
        let group = unsafe { libc::getpgrp() } as u32;
        assert!(group_usage(group).unwrap().1 > 0, "this process is one of its group");
        let a = sample().unwrap();
        let b = sample().unwrap();
        let u = usage(&a, &b);
        assert!(u.total >= 0.0 && u.server >= 0.0 && u.client >= 0.0);
    }
}
