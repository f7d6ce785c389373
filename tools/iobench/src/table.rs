//! The benchmark's results: one `Row` per path and workload, the
//! figures of each VMM, and their rendering as a markdown table and as
//! JSON. Owns no measuring: `vm` and `ceiling` fill the rows.

use serde_json::{json, Value};

/// What one VMM (or the host) achieved on one workload: medians over runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub iops: f64,
    pub mib_s: f64,
    pub mean_lat_us: f64,
    pub p99_lat_us: f64,
    /// Host CPU seconds (user + system, VMM and its device processes)
    /// per GiB moved, the boot's share subtracted.
    pub cpu_s_per_gib: Option<f64>,
    /// Returns from KVM_RUN to the VMM per request, the boot's share
    /// subtracted; Casemate logs the count, QEMU does not.
    pub exits_per_io: Option<f64>,
}

/// One workload: a mode of the probe's benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub mode: &'static str,
    pub bs: u32,
    pub qd: u32,
}

impl Workload {
    pub fn label(&self) -> String {
        let size = if self.bs >= 1 << 20 {
            format!("{}M", self.bs >> 20)
        } else {
            format!("{}K", self.bs >> 10)
        };
        format!("{} {size} qd{}", self.mode, self.qd)
    }
}

/// One path on one workload. `qemu` is `None` where QEMU 7.2 lacks the
/// path; `note` says why a figure is missing or differs.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub path: String,
    pub work: Workload,
    pub casemate: Option<Figures>,
    pub qemu: Option<Figures>,
    pub note: String,
}

impl Row {
    /// Casemate's IOPS over QEMU's, where both ran.
    pub fn ratio(&self) -> Option<f64> {
        let (c, q) = (self.casemate?, self.qemu?);
        (q.iops > 0.0).then(|| c.iops / q.iops)
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

/// The markdown table, one line per row.
pub fn markdown(rows: &[Row], header: &str) -> String {
    let mut s = format!("{header}\n\n");
    s += "| path | workload | Casemate IOPS | QEMU IOPS | ratio | Casemate MiB/s | QEMU MiB/s \
          | Casemate mean/p99 us | QEMU mean/p99 us | Casemate CPU s/GiB | QEMU CPU s/GiB \
          | Casemate exits/IO | note |\n";
    s += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
    for r in rows {
        let f =
            |x: Option<Figures>, g: fn(&Figures) -> Option<f64>, p| opt(x.as_ref().and_then(g), p);
        let lat = |x: Option<Figures>| {
            x.map_or_else(
                || "-".into(),
                |x| format!("{:.0} / {:.0}", x.mean_lat_us, x.p99_lat_us),
            )
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.path,
            r.work.label(),
            f(r.casemate, |x| Some(x.iops), 0),
            f(r.qemu, |x| Some(x.iops), 0),
            opt(r.ratio(), 2),
            f(r.casemate, |x| Some(x.mib_s), 1),
            f(r.qemu, |x| Some(x.mib_s), 1),
            lat(r.casemate),
            lat(r.qemu),
            f(r.casemate, |x| x.cpu_s_per_gib, 2),
            f(r.qemu, |x| x.cpu_s_per_gib, 2),
            f(r.casemate, |x| x.exits_per_io, 2),
            r.note,
        );
    }
    s
}

fn figures_json(f: &Option<Figures>) -> Value {
    match f {
        None => Value::Null,
        Some(f) => json!({
            "iops": f.iops, "mib_s": f.mib_s,
            "mean_lat_us": f.mean_lat_us, "p99_lat_us": f.p99_lat_us,
            "cpu_s_per_gib": f.cpu_s_per_gib, "exits_per_io": f.exits_per_io,
        }),
    }
}

/// The rows for programs: every figure, `null` where absent.
pub fn to_json(rows: &[Row], runs: usize, ms: u64) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "path": r.path, "mode": r.work.mode, "bs": r.work.bs, "qd": r.work.qd,
                "casemate": figures_json(&r.casemate), "qemu": figures_json(&r.qemu),
                "ratio": r.ratio(), "note": r.note,
            })
        })
        .collect();
    json!({ "runs": runs, "ms": ms, "rows": rows })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Vec<Row> {
        let f = |iops: f64| Figures {
            iops,
            mib_s: iops * 4096.0 / 1048576.0,
            mean_lat_us: 1e6 / iops,
            p99_lat_us: 2e6 / iops,
            cpu_s_per_gib: Some(3.5),
            exits_per_io: Some(1.0),
        };
        let w = Workload {
            mode: "randread",
            bs: 4096,
            qd: 1,
        };
        vec![
            Row {
                path: "ahci".into(),
                work: w,
                casemate: Some(f(800.0)),
                qemu: Some(f(400.0)),
                note: String::new(),
            },
            Row {
                path: "vfio-user".into(),
                work: w,
                casemate: Some(f(1000.0)),
                qemu: None,
                note: "QEMU 7.2 has no vfio-user".into(),
            },
            Row {
                path: "kernel-vfio".into(),
                work: w,
                casemate: None,
                qemu: None,
                note: "absent: no /dev/vfio".into(),
            },
            Row {
                path: "host-io_uring".into(),
                work: w,
                casemate: Some(f(5000.0)),
                qemu: None,
                note: "ceiling".into(),
            },
        ]
    }

    #[test]
    fn the_table_has_a_line_per_row_and_the_ratio() {
        let t = markdown(&sample(), "hdr");
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(lines.len(), 1 + 4, "{t}");
        assert!(
            lines[1].starts_with("| ahci | randread 4K qd1 | 800 | 400 | 2.00 |"),
            "{t}"
        );
        assert!(
            lines[2].contains("| - | - |") && lines[2].contains("no vfio-user"),
            "{t}"
        );
        assert!(lines[3].contains("absent: no /dev/vfio"), "{t}");
        assert!(lines[1].contains("1250 / 2500"), "{t}");
    }

    #[test]
    fn json_keeps_every_figure_and_nulls_the_absent() {
        let v = to_json(&sample(), 3, 1500);
        assert_eq!(v["runs"], 3);
        let r = &v["rows"];
        assert_eq!(r[0]["ratio"], 2.0);
        assert_eq!(r[0]["casemate"]["p99_lat_us"], 2500.0);
        assert_eq!(r[0]["qemu"]["exits_per_io"], 1.0);
        assert!(r[1]["qemu"].is_null() && r[1]["ratio"].is_null());
        assert!(r[2]["casemate"].is_null());
        assert_eq!(r[3]["bs"], 4096);
    }

    #[test]
    fn workload_labels_name_the_size() {
        let w = Workload {
            mode: "seqread",
            bs: 1 << 20,
            qd: 1,
        };
        assert_eq!(w.label(), "seqread 1M qd1");
    }
}
