//! The report of a bench run: a table for people, or one JSON object (serde) for machines,
//! with per operation kind the counts, obj/s, MiB/s, latency percentiles and time to first
//! byte, and the tool's own CPU per request.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::opts::Opts;
use super::stats::OpStats;

/// The whole run, as `--json` prints it.
#[derive(Serialize)]
struct RunJson<'a> {
    op: &'static str,
    size: u64,
    concurrency: usize,
    seconds: f64,
    client_cpu_us_per_op: f64,
    results: Vec<RowJson<'a>>,
}

/// One operation kind, as `--json` prints it.
#[derive(Serialize)]
struct RowJson<'a> {
    op: &'static str,
    ops: u64,
    errors: u64,
    obj_per_s: f64,
    mib_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    ttfb_p50_ms: f64,
    ttfb_p99_ms: f64,
    error_kinds: &'a BTreeMap<String, u64>,
}

/// The figures of one operation kind over the measured window.
struct Row<'a> {
    op: &'static str,
    ops: u64,
    errors: u64,
    obj_per_s: f64,
    mib_per_s: f64,
    /// p50, p90, p99, p99.9 and max latency, ms.
    latency_ms: [f64; 5],
    /// p50 and p99 time to first byte, ms.
    ttfb_ms: [f64; 2],
    error_kinds: &'a BTreeMap<String, u64>,
}

/// `x` rounded to `decimals` places, as the report has always printed it.
fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl<'a> Row<'a> {
    fn new(op: &'static str, s: &'a OpStats, secs: f64) -> Row<'a> {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &s.latency_us;
        Row {
            op,
            ops: s.ops,
            errors: s.errors,
            obj_per_s: s.ops as f64 / secs,
            mib_per_s: s.bytes as f64 / secs / 1_048_576.0,
            latency_ms: [
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            ],
            ttfb_ms: [ms(s.ttfb_us.value_at_quantile(0.5)), ms(s.ttfb_us.value_at_quantile(0.99))],
            error_kinds: &s.error_kinds,
        }
    }

    fn json(&self) -> RowJson<'a> {
        let [p50, p90, p99, p999, max] = self.latency_ms.map(|v| round(v, 3));
        RowJson {
            op: self.op,
            ops: self.ops,
            errors: self.errors,
            obj_per_s: round(self.obj_per_s, 1),
            mib_per_s: round(self.mib_per_s, 2),
            p50_ms: p50,
            p90_ms: p90,
            p99_ms: p99,
            p999_ms: p999,
            max_ms: max,
            ttfb_p50_ms: round(self.ttfb_ms[0], 3),
            ttfb_p99_ms: round(self.ttfb_ms[1], 3),
            error_kinds: self.error_kinds,
        }
    }

    fn table_line(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latency_ms;
        format!(
            "{:<10} {:>9} {:>10.1} {:>10.2} {p50:>9.2} {p90:>9.2} {p99:>9.2} {p999:>9.2} {max:>9.2} {:>10.2} {:>7}",
            self.op, self.ops, self.obj_per_s, self.mib_per_s, self.ttfb_ms[0], self.errors
        )
    }
}

/// Prints the report of a run that measured for `measured` and used `cpu` for `total_ops`
/// requests.
pub fn report(o: &Opts, stats: &BTreeMap<&'static str, OpStats>, measured: Duration, cpu: Duration, total_ops: u64) {
    let secs = measured.as_secs_f64().max(1e-9);
    let cpu_us_per_op = if total_ops > 0 { cpu.as_micros() as f64 / total_ops as f64 } else { 0.0 };
    let rows: Vec<Row> = stats.iter().map(|(op, s)| Row::new(op, s, secs)).collect();
    if o.json {
        let run = RunJson {
            op: o.op.name(),
            size: o.size,
            concurrency: o.concurrency,
            seconds: round(secs, 3),
            client_cpu_us_per_op: round(cpu_us_per_op, 1),
            results: rows.iter().map(Row::json).collect(),
        };
        match serde_json::to_string(&run) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("ferrite bench: cannot write the JSON report: {e}"),
        }
        return;
    }
    println!(
        "ferrite bench {}: size {} B{}, concurrency {}, measured {:.1} s, client CPU {:.1} us/op",
        o.op.name(),
        o.size,
        if o.random_size { " (random)" } else { "" },
        o.concurrency,
        secs,
        cpu_us_per_op
    );
    table(&rows);
}

fn table(rows: &[Row]) {
    if rows.is_empty() {
        println!("no operation completed in the measured window");
        return;
    }
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "op", "ops", "obj/s", "MiB/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "ttfb p50", "errors"
    );
    for row in rows {
        println!("{}", row.table_line());
    }
    for row in rows {
        for (kind, n) in row.error_kinds {
            println!("{} errors: {n} x {kind}", row.op);
        }
    }
}
