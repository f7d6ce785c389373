//! The plot: one bar chart per metric (4 KiB random read and write IOPS
//! at QD1 and QD32, sequential MiB/s, QD1 mean latency), a pair of bars
//! per path (Casemate, QEMU 7.2) on a log scale, and the host's io_uring
//! ceiling as a horizontal line; written as PREFIX.png and PREFIX.svg
//! with `plotters`. Text needs a TrueType font: DejaVu Sans from the
//! system (plotters' `ab_glyph` backend loads none itself).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::table::{Figures, Row};

/// The row name of the host's ceiling.
pub const CEILING: &str = "host io_uring";

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const CASEMATE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const QEMU: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// One panel: which rows, which figure.
struct Metric {
    title: &'static str,
    unit: &'static str,
    pick: fn(&Row) -> bool,
    value: fn(&Figures) -> f64,
}

const METRICS: [Metric; 6] = [
    Metric {
        title: "4K random read QD1",
        unit: "IOPS",
        pick: |r| is(r, "randread", 1),
        value: |f| f.iops,
    },
    Metric {
        title: "4K random write QD1",
        unit: "IOPS",
        pick: |r| is(r, "randwrite", 1),
        value: |f| f.iops,
    },
    Metric {
        title: "4K random read QD32",
        unit: "IOPS",
        pick: |r| is(r, "randread", 32),
        value: |f| f.iops,
    },
    Metric {
        title: "4K random write QD32",
        unit: "IOPS",
        pick: |r| is(r, "randwrite", 32),
        value: |f| f.iops,
    },
    Metric {
        title: "sequential read (1M; ATA paths 64K)",
        unit: "MiB/s",
        pick: |r| r.work.mode == "seqread",
        value: |f| f.mib_s,
    },
    Metric {
        title: "4K random read QD1 mean latency (lower is better)",
        unit: "us",
        pick: |r| is(r, "randread", 1),
        value: |f| f.mean_lat_us,
    },
];

fn is(r: &Row, mode: &str, qd: u32) -> bool {
    r.work.mode == mode && r.work.qd == qd && r.work.bs == 4096
}

fn font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes =
            std::fs::read(FONT).map_err(|e| format!("reading the plot font {FONT}: {e}"))?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| format!("{FONT} is not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: &Metric,
    rows: &[Row],
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing {}: {e:?}", m.title);
    let ceiling = rows
        .iter()
        .find(|r| r.path == CEILING && (m.pick)(r))
        .and_then(|r| r.casemate.as_ref().map(m.value));
    let paths: Vec<&Row> = rows
        .iter()
        .filter(|r| r.path != CEILING && (m.pick)(r))
        .collect();
    let values = paths
        .iter()
        .flat_map(|r| [r.casemate, r.qemu])
        .flatten()
        .map(|f| (m.value)(&f))
        .chain(ceiling)
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 {
        (lo / 2.0, hi * 2.0)
    } else {
        (0.1, 10.0)
    };
    let n = paths.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(m.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(8)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc(m.unit)
        .draw()
        .map_err(err)?;
    for (who, color, off) in [("Casemate", CASEMATE, 0.1), ("QEMU 7.2", QEMU, 0.5)] {
        let bars = paths.iter().enumerate().filter_map(|(i, r)| {
            let f = if who == "Casemate" {
                r.casemate
            } else {
                r.qemu
            }?;
            let x = i as f64 + off;
            Some(Rectangle::new(
                [(x, lo), (x + 0.4, (m.value)(&f).max(lo))],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(who)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    let labels = paths.iter().enumerate().map(|(i, r)| {
        Text::new(
            r.path.clone(),
            (i as f64 + 0.1, lo * 1.15),
            ("sans-serif", 13),
        )
    });
    chart.draw_series(labels).map_err(err)?;
    if let Some(c) = ceiling {
        chart
            .draw_series(std::iter::once(PathElement::new(
                [(0.0, c), (n, c)],
                BLACK.stroke_width(2),
            )))
            .map_err(err)?
            .label(CEILING)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, rows: &[Row], title: &str) -> Result<()> {
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| anyhow!("{e:?}"))?;
    for (area, m) in root.split_evenly((2, 3)).iter().zip(&METRICS) {
        panel(area, m, rows)?;
    }
    root.present()
        .map_err(|e| anyhow!("writing the plot: {e:?}"))
}

/// Write PREFIX.png and PREFIX.svg; returns their paths.
pub fn write(prefix: &Path, rows: &[Row], title: &str) -> Result<[PathBuf; 2]> {
    font()?;
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let png = prefix.with_extension("png");
    let svg = prefix.with_extension("svg");
    const SIZE: (u32, u32) = (1800, 1000);
    draw(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        rows,
        title,
    )
    .with_context(|| format!("drawing {}", png.display()))?;
    draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), rows, title)
        .with_context(|| format!("drawing {}", svg.display()))?;
    Ok([png, svg])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_svg_are_written_with_every_path() {
        let mut rows = crate::table::tests::sample();
        rows[3].path = CEILING.into();
        let dir = std::env::temp_dir().join(format!("iobench-plot-{}", std::process::id()));
        let [png, svg] = write(&dir.join("t"), &rows, "test").unwrap();
        let p = std::fs::read(&png).unwrap();
        let s = std::fs::read_to_string(&svg).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        assert!(p.len() > 10_000, "a blank PNG compresses to less");
        for name in ["ahci", "vfio-user", CEILING, "Casemate", "QEMU 7.2"] {
            assert!(s.contains(name), "{name} missing from the SVG");
        }
    }
}
