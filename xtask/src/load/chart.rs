//! `summary.svg`: latency percentiles and throughput per profile, side by side.

use super::report::ProfileResult;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 3] = [
    RGBColor(76, 114, 176),
    RGBColor(221, 132, 82),
    RGBColor(196, 78, 82),
];

pub fn draw(results: &[ProfileResult], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(620);
    latency_panel(results, &left)?;
    throughput_panel(results, &right)?;
    root.present()?;
    Ok(())
}

fn names(results: &[ProfileResult]) -> Vec<String> {
    results.iter().map(|r| r.profile.clone()).collect()
}

fn label_for(names: &[String], x: f64) -> String {
    let i = x.floor();
    if (x - i - 0.5).abs() < 1e-6 && i >= 0.0 {
        names.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

fn latency_panel<DB: DrawingBackend>(
    results: &[ProfileResult],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let names = names(results);
    let top = results
        .iter()
        .map(|r| r.report.p99_ms)
        .fold(1.0_f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency, all requests (ms): p50 / p95 / p99",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..results.len() as f64, 0.0..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(results.len() * 2 + 1)
        .x_label_formatter(&|x| label_for(&names, *x))
        .y_desc("ms")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, r) in results.iter().enumerate() {
        let values = [r.report.p50_ms, r.report.p95_ms, r.report.p99_ms];
        for (j, value) in values.into_iter().enumerate() {
            let x0 = i as f64 + 0.15 + j as f64 * 0.24;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + 0.22, value)],
                    COLORS[j].filled(),
                )))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    for (j, label) in ["p50", "p95", "p99"].iter().enumerate() {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (0.0, 0.0)],
                COLORS[j].filled(),
            )))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(*label)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], COLORS[j].filled())
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn throughput_panel<DB: DrawingBackend>(
    results: &[ProfileResult],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let names = names(results);
    let top = results.iter().map(|r| r.report.rps).fold(1.0_f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Throughput (req/s; green: met every threshold)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..results.len() as f64, 0.0..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(results.len() * 2 + 1)
        .x_label_formatter(&|x| label_for(&names, *x))
        .y_desc("req/s")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(results.iter().enumerate().map(|(i, r)| {
            let color = if r.pass {
                RGBColor(85, 168, 104)
            } else {
                RGBColor(150, 150, 150)
            };
            Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, r.report.rps)],
                color.filled(),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
