//! `summary.svg`: latency percentiles and throughput per profile, side by side.

use super::results::ProfileResult;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

const COLORS: [RGBColor; 3] = [
    RGBColor(76, 114, 176),
    RGBColor(221, 132, 82),
    RGBColor(196, 78, 82),
];
const PASSED: RGBColor = RGBColor(85, 168, 104);
const FAILED: RGBColor = RGBColor(150, 150, 150);

pub fn draw(results: &[ProfileResult], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(620);
    latency_panel(results, &left)?;
    throughput_panel(results, &right)?;
    root.present()?;
    Ok(())
}

/// A panel with one slot per profile on x (named at its middle) and 0..top on y.
fn panel<'a, 'b>(
    area: &'a Area<'b>,
    results: &[ProfileResult],
    caption: &str,
    y_desc: &str,
    top: f64,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..results.len() as f64, 0.0..top * 1.15)?;
    let names: Vec<&str> = results.iter().map(|r| r.profile.as_str()).collect();
    let label = |x: &f64| {
        let slot = x.floor();
        let centred = (x - slot - 0.5).abs() < 1e-6 && slot >= 0.0;
        let name = centred.then(|| names.get(slot as usize)).flatten();
        name.map_or_else(String::new, |n| (*n).to_owned())
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(results.len() * 2 + 1)
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .draw()?;
    Ok(chart)
}

fn latency_panel(results: &[ProfileResult], area: &Area<'_>) -> anyhow::Result<()> {
    let top = results.iter().map(|r| r.report.p99_ms).fold(1.0, f64::max);
    let mut chart = panel(
        area,
        results,
        "Latency, all requests (ms): p50 / p95 / p99",
        "ms",
        top,
    )?;
    for (j, label) in ["p50", "p95", "p99"].into_iter().enumerate() {
        let bars = results.iter().enumerate().map(|(i, r)| {
            let value = [r.report.p50_ms, r.report.p95_ms, r.report.p99_ms][j];
            let x0 = i as f64 + 0.15 + j as f64 * 0.24;
            Rectangle::new([(x0, 0.0), (x0 + 0.22, value)], COLORS[j].filled())
        });
        chart.draw_series(bars)?.label(label).legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 10, y + 5)], COLORS[j].filled())
        });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}

fn throughput_panel(results: &[ProfileResult], area: &Area<'_>) -> anyhow::Result<()> {
    let top = results.iter().map(|r| r.report.rps).fold(1.0, f64::max);
    let mut chart = panel(
        area,
        results,
        "Throughput (req/s; green: met every threshold)",
        "req/s",
        top,
    )?;
    chart.draw_series(results.iter().enumerate().map(|(i, r)| {
        let color = if r.pass { PASSED } else { FAILED };
        Rectangle::new(
            [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, r.report.rps)],
            color.filled(),
        )
    }))?;
    Ok(())
}
