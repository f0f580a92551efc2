//! `timeline.svg`: one panel per fault case, answers per 100 ms by kind,
//! with the fault's moments marked, so recovery can be seen at a glance.

use super::findings::CaseReport;
use plotters::prelude::*;
use std::path::Path;

const SERVED: RGBColor = RGBColor(85, 168, 104);
const UNAVAILABLE: RGBColor = RGBColor(221, 132, 82);
const SERVER_ERROR: RGBColor = RGBColor(196, 78, 82);
const NO_ANSWER: RGBColor = RGBColor(120, 120, 120);

pub fn draw(reports: &[CaseReport], path: &Path) -> anyhow::Result<()> {
    let cases: Vec<&CaseReport> = reports
        .iter()
        .filter(|r| !r.timeline.served.is_empty())
        .collect();
    if cases.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1000, 230 * cases.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, report) in root.split_evenly((cases.len(), 1)).iter().zip(cases) {
        let t = &report.timeline;
        let end = t.served.len() as f64 * t.slice_secs;
        let per_second = |v: u32| f64::from(v) / t.slice_secs;
        let top = (0..t.served.len())
            .map(|i| {
                per_second(
                    t.served[i]
                        .max(t.unavailable[i])
                        .max(t.server_errors[i])
                        .max(t.no_answer[i]),
                )
            })
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{}: answers per second", report.name),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..end, 0.0..top * 1.1)?;
        chart.configure_mesh().x_desc("seconds").draw()?;
        for (name, series, color) in [
            ("served (< 500)", &t.served, SERVED),
            ("503 + Retry-After", &t.unavailable, UNAVAILABLE),
            ("other 5xx", &t.server_errors, SERVER_ERROR),
            ("no answer", &t.no_answer, NO_ANSWER),
        ] {
            let points = series
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64 * t.slice_secs, per_second(*v)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        for (label, at) in &report.marks {
            chart.draw_series(LineSeries::new(
                [(*at, 0.0), (*at, top * 1.1)],
                BLACK.stroke_width(1),
            ))?;
            chart.draw_series([Text::new(
                label.clone(),
                (*at, top * 1.05),
                ("sans-serif", 12),
            )])?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
