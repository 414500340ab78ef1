//! The report of a comparison: each run's table, the ratios of coord to
//! each peer, and the spread over runs.

use super::*;

pub(super) fn p50_p99(v: &[f64]) -> (f64, f64) {
    (pct(v, 0.5), pct(v, 0.99))
}

pub(super) fn line(label: &str, f: &Figures, o: &Opts) -> String {
    let (a50, a99) = p50_p99(&f.ack);
    let (d50, d99) = p50_p99(&f.deliver);
    let mut s = format!(
        "{label}: ack p50 {a50:.0} µs p99 {a99:.0} µs | deliver p50 {d50:.0} µs p99 {d99:.0} µs | {} writers {:.0} ev/s",
        o.writers, f.throughput
    );
    if let Some(n) = o.fanout {
        let (f50, f99) = p50_p99(&f.fanout);
        s.push_str(&format!(
            " | fan-out to {n} p50 {f50:.1} ms p99 {f99:.1} ms"
        ));
    }
    s
}

/// One line of a table: ack and deliver p50 / p99 (µs), throughput
/// (ev/s), fan-out p50 / p99 (ms).
struct Row {
    ack: (f64, f64),
    deliver: (f64, f64),
    throughput: f64,
    fanout: (f64, f64),
}

impl Row {
    fn of(f: &Figures) -> Row {
        Row {
            ack: p50_p99(&f.ack),
            deliver: p50_p99(&f.deliver),
            throughput: f.throughput,
            fanout: p50_p99(&f.fanout),
        }
    }
}

/// The Markdown table of `rows` (the fan-out column only with `--fanout`).
fn print_rows(rows: &[(&str, Row)], o: &Opts) {
    let fan = o.fanout.map(|n| format!(" fan-out to {n}, p50 / p99 |"));
    println!(
        "| system | ack p50 / p99 | deliver p50 / p99 | {}-writer throughput |{}",
        o.writers,
        fan.clone().unwrap_or_default()
    );
    println!(
        "| --- | --- | --- | --- |{}",
        if fan.is_some() { " --- |" } else { "" }
    );
    for (label, r) in rows {
        let mut line = format!(
            "| {label} | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.0} ev/s |",
            r.ack.0, r.ack.1, r.deliver.0, r.deliver.1, r.throughput
        );
        if fan.is_some() {
            line.push_str(&format!(" {:.1} / {:.1} ms |", r.fanout.0, r.fanout.1));
        }
        println!("{line}");
    }
}

/// A Markdown table of every system, then coord's ratios to each peer
/// (above 1: coord is ahead; throughput coord ÷ peer, latency peer ÷ coord).
pub(super) fn print_table(results: &[(String, Figures)], o: &Opts) {
    println!();
    let rows: Vec<(&str, Row)> = results
        .iter()
        .map(|(label, f)| (label.as_str(), Row::of(f)))
        .collect();
    print_rows(&rows, o);
    let Some((coord_label, c)) = results.iter().find(|(l, _)| l.starts_with("coord")) else {
        return;
    };
    for (label, p) in results.iter().filter(|(l, _)| !l.starts_with("coord")) {
        let r: Vec<String> = ratios(c, p, o.fanout.is_some())
            .into_iter()
            .map(|(name, v)| format!("{name} {v:.2}×"))
            .collect();
        println!(
            "{coord_label} vs {label}: {}  (above 1: coord ahead)",
            r.join(", ")
        );
    }
}

/// coord's ratios to one peer, by name: throughput coord ÷ peer, latency
/// peer ÷ coord, so above 1 always means coord is ahead.
pub(super) fn ratios(c: &Figures, p: &Figures, fanout: bool) -> Vec<(&'static str, f64)> {
    let lat = |mine: &[f64], theirs: &[f64], q: f64| pct(theirs, q) / pct(mine, q);
    let mut r = vec![
        ("throughput", c.throughput / p.throughput),
        ("ack p50", lat(&c.ack, &p.ack, 0.5)),
        ("ack p99", lat(&c.ack, &p.ack, 0.99)),
        ("deliver p50", lat(&c.deliver, &p.deliver, 0.5)),
        ("deliver p99", lat(&c.deliver, &p.deliver, 0.99)),
    ];
    if fanout {
        r.push(("fan-out p50", lat(&c.fanout, &p.fanout, 0.5)));
        r.push(("fan-out p99", lat(&c.fanout, &p.fanout, 0.99)));
    }
    r
}

/// One ratio over several runs: its median, least and greatest, and in how
/// many runs coord was ahead (the ratio above 1). NaN (a figure missing)
/// counts as a run, never as a lead.
#[derive(Debug, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    ahead: usize,
    runs: usize,
}

impl Spread {
    /// `None` for no runs.
    fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
            ahead: v.iter().filter(|x| **x > 1.0).count(),
            runs: values.len(),
        })
    }
}

/// The median over `runs` of one figure of one system (each run's own
/// percentile first).
pub(super) fn median_of(runs: &[&Figures], f: impl Fn(&Figures) -> f64) -> f64 {
    Spread::of(&runs.iter().map(|r| f(r)).collect::<Vec<_>>()).map_or(f64::NAN, |s| s.median)
}

/// After `--runs N` (N > 1): each system's figures as medians over the
/// runs, then each of coord's ratios as median (least–greatest, the runs
/// coord was ahead in).
pub(super) fn print_summary(runs: &[Vec<(String, Figures)>], o: &Opts) {
    let mut labels: Vec<&str> = Vec::new();
    for (label, _) in runs.iter().flatten() {
        if !labels.contains(&label.as_str()) {
            labels.push(label);
        }
    }
    let of = |label: &str| -> Vec<&Figures> {
        runs.iter()
            .filter_map(|r| r.iter().find(|(l, _)| l == label).map(|(_, f)| f))
            .collect()
    };
    println!();
    println!("== {} runs: each figure the median of the runs", runs.len());
    let rows: Vec<(&str, Row)> = labels
        .iter()
        .map(|label| {
            let f = of(label);
            let m = |g: fn(&Figures) -> f64| median_of(&f, g);
            let row = Row {
                ack: (m(|x| pct(&x.ack, 0.5)), m(|x| pct(&x.ack, 0.99))),
                deliver: (m(|x| pct(&x.deliver, 0.5)), m(|x| pct(&x.deliver, 0.99))),
                throughput: m(|x| x.throughput),
                fanout: (m(|x| pct(&x.fanout, 0.5)), m(|x| pct(&x.fanout, 0.99))),
            };
            (*label, row)
        })
        .collect();
    print_rows(&rows, o);
    let Some(coord_label) = labels.iter().find(|l| l.starts_with("coord")) else {
        return;
    };
    for peer in labels.iter().filter(|l| !l.starts_with("coord")) {
        // Each run's ratios, where both ran.
        let per_run: Vec<Vec<(&'static str, f64)>> = runs
            .iter()
            .filter_map(|r| {
                let c = r.iter().find(|(l, _)| l == coord_label)?;
                let p = r.iter().find(|(l, _)| l == peer)?;
                Some(ratios(&c.1, &p.1, o.fanout.is_some()))
            })
            .collect();
        let Some(first) = per_run.first() else {
            continue;
        };
        let parts: Vec<String> = first
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| {
                let v: Vec<f64> = per_run.iter().map(|r| r[i].1).collect();
                let s = Spread::of(&v)?;
                Some(format!(
                    "{name} {:.2}× ({:.2}–{:.2}×, ahead in {} of {})",
                    s.median, s.min, s.max, s.ahead, s.runs
                ))
            })
            .collect();
        println!(
            "{coord_label} vs {peer}, {} runs: {}  (median, range, runs with coord ahead)",
            per_run.len(),
            parts.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_machine_and_says_when_it_cannot_read_the_binary() {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let m = machine();
        assert!(m.starts_with(&format!("{cpus} CPUs")), "{m}");
        if std::path::Path::new("/proc/sys/kernel/osrelease").exists() {
            assert!(m.contains(", Linux "), "{m}");
        }
        assert_eq!(
            coord_version(Path::new("/nonexistent/coord"))
                .split(',')
                .next(),
            Some("coord (version unknown)")
        );
    }

    #[test]
    fn a_spread_gives_the_median_the_range_and_the_leads() {
        let s = Spread::of(&[0.83, 0.58, 0.94, 1.2, 0.58, 0.98]).expect("runs");
        assert_eq!(s.runs, 6);
        assert_eq!(s.ahead, 1);
        assert_eq!((s.min, s.max), (0.58, 1.2));
        assert!((s.median - (0.83 + 0.94) / 2.0).abs() < 1e-9);
        let odd = Spread::of(&[3.0, 1.0, 2.0]).expect("runs");
        assert_eq!(odd.median, 2.0);
        assert_eq!(odd.ahead, 2, "exactly 1 is level, not ahead");
    }

    #[test]
    fn a_missing_figure_is_a_run_but_never_a_lead() {
        let s = Spread::of(&[f64::NAN, 1.5]).expect("one figure");
        assert_eq!((s.runs, s.ahead, s.median), (2, 1, 1.5));
        assert_eq!(Spread::of(&[f64::NAN]), None);
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn ratios_read_above_one_as_coord_ahead() {
        let coord = Figures {
            ack: vec![10.0, 20.0],
            deliver: vec![100.0],
            throughput: 200.0,
            fanout: vec![],
        };
        let peer = Figures {
            ack: vec![20.0, 40.0],
            deliver: vec![50.0],
            throughput: 100.0,
            fanout: vec![],
        };
        let r = ratios(&coord, &peer, false);
        let get = |n: &str| r.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(get("throughput"), Some(2.0));
        assert_eq!(get("ack p50"), Some(2.0));
        assert_eq!(get("deliver p99"), Some(0.5));
        assert_eq!(get("fan-out p99"), None, "no fan-out asked for");
    }
}
