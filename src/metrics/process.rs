//! The process's own figures, read from `/proc/self` when metrics are rendered (Linux; elsewhere
//! they are absent): resident and virtual memory, open and allowed file descriptors, threads,
//! CPU time and start time — the `process_*` names every Prometheus client library uses.

use ::metrics::gauge;

pub const RESIDENT: &str = "process_resident_memory_bytes";
pub const VIRTUAL: &str = "process_virtual_memory_bytes";
pub const OPEN_FDS: &str = "process_open_fds";
pub const MAX_FDS: &str = "process_max_fds";
pub const THREADS: &str = "process_threads";
pub const CPU: &str = "process_cpu_seconds_total";
pub const START: &str = "process_start_time_seconds";

/// Clock ticks per second of `/proc/*/stat` times: USER_HZ, 100 on every Linux architecture
/// regkeeper builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says now.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_seconds: Option<f64>,
}

pub fn sample() -> Sample {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `fields[0]` is field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok());
    Sample {
        resident_bytes: kib("VmRSS:").map(|k| k * 1024),
        virtual_bytes: kib("VmSize:").map(|k| k * 1024),
        threads: status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok()),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Max open files")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            }),
        cpu_seconds: field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) as f64 / TICKS_PER_SECOND),
        start_seconds: field(22)
            .zip(boot)
            .map(|(start, boot)| boot as f64 + start as f64 / TICKS_PER_SECOND),
    }
}

/// Sets the gauges from a fresh sample.
pub fn record() {
    let now = sample();
    let set = |name: &'static str, value: Option<f64>| {
        if let Some(value) = value {
            gauge!(name).set(value);
        }
    };
    set(RESIDENT, now.resident_bytes.map(|v| v as f64));
    set(VIRTUAL, now.virtual_bytes.map(|v| v as f64));
    set(THREADS, now.threads.map(|v| v as f64));
    set(OPEN_FDS, now.open_fds.map(|v| v as f64));
    set(MAX_FDS, now.max_fds.map(|v| v as f64));
    set(CPU, now.cpu_seconds);
    set(START, now.start_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_described() {
        let now = sample();
        assert!(now.resident_bytes.unwrap() > 1 << 20, "{now:?}");
        assert!(now.virtual_bytes.unwrap() >= now.resident_bytes.unwrap());
        assert!(now.threads.unwrap() >= 1);
        assert!(now.open_fds.unwrap() >= 3);
        assert!(now.max_fds.unwrap() >= now.open_fds.unwrap());
        assert!(now.cpu_seconds.unwrap() >= 0.0);
        let started = now.start_seconds.unwrap();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= wall + 1.0 && started > wall - 86_400.0 * 365.0,
            "{started}"
        );
    }
}
