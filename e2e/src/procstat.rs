//! CPU time and resident memory of a process, from `/proc` (benchmarks).

use std::time::Duration;

use anyhow::Context as _;

/// `utime + stime` of process `pid` (`"self"` for this one), or with `children` of its reaped
/// children, from `/proc/<pid>/stat`.
pub fn cpu(pid: &str, children: bool) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14/15 (utime/stime) and 16/17 (cutime/cstime), 1-based; `fields[0]` is field 3.
    let first = if children { 13 } else { 11 };
    let ticks = fields
        .get(first..first + 2)
        .context("short /proc stat line")?
        .iter()
        .map(|field| field.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100) as u64;
    Ok(Duration::from_millis(ticks * 1000 / per_second))
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no VmRSS line")?
        .parse::<u64>()?;
    Ok(kib * 1024)
}
