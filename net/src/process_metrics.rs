//! The standard `process_*` metrics (Prometheus' client libraries export them; dashboards,
//! alerts and `etcdctl check datascale` read `process_resident_memory_bytes`), read from
//! `/proc/self` at each scrape. Elsewhere than Linux they are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Linux's clock ticks per second for `/proc` times (`sysconf(_SC_CLK_TCK)`, 100 on every
/// architecture Linux runs on).
const TICKS_PER_SECOND: f64 = 100.0;

pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

/// One reading of the process's figures.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: f64,
    open_fds: i64,
    max_fds: i64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(reading) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(reading.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                reading.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                reading.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                reading.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                reading.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let start = ConstGauge::new(reading.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            None,
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    parse(&stat, &status, &limits, &boot, open_fds)
}

fn parse(stat: &str, status: &str, limits: &str, boot: &str, open_fds: usize) -> Option<Reading> {
    // The command name may hold spaces and parentheses: fields start after the last `)`,
    // with the state (field 3 of proc(5)) first.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
    let ticks = field(14)? + field(15)?;
    let started_ticks = field(22)?;
    let kib = |name: &str| -> Option<i64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let value: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(value * 1024)
    };
    let max_fds = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(-1);
    let boot_seconds: f64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Reading {
        cpu_seconds: ticks / TICKS_PER_SECOND,
        resident_bytes: kib("VmRSS:")?,
        virtual_bytes: kib("VmSize:")?,
        start_time_seconds: boot_seconds + started_ticks / TICKS_PER_SECOND,
        open_fds: i64::try_from(open_fds).unwrap_or(i64::MAX),
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_reading_is_parsed_field_by_field() {
        let stat = "4242 (keel (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    12 0 12345 999999 4321 18446744073709551615";
        let status = "Name:\tkeel\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
        let reading = parse(stat, status, limits, boot, 17).unwrap();
        assert_eq!(
            reading,
            Reading {
                cpu_seconds: 3.0,
                resident_bytes: 10240 * 1024,
                virtual_bytes: 204800 * 1024,
                start_time_seconds: 1_700_000_000.0 + 123.45,
                open_fds: 17,
                max_fds: 1024,
            }
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_running_now() {
        let reading = read().unwrap();
        assert!(
            reading.resident_bytes > 0 && reading.open_fds > 0,
            "{reading:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(reading.start_time_seconds <= now + 1.0, "{reading:?}");
        assert!(reading.start_time_seconds > now - 3600.0, "{reading:?}");
    }
}
