//! `soak.svg`: a soak run over time, four panels: p99 per 5 s window of the
//! main requests, throughput, the pool's waiting checkouts and the hash
//! queue, and the server's RSS with the tables' sizes.

use super::soak::SoakResult;
use harness::timeline::Timeline;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const COLORS: [RGBColor; 6] = [
    RGBColor(76, 114, 176),
    RGBColor(221, 132, 82),
    RGBColor(85, 168, 104),
    RGBColor(196, 78, 82),
    RGBColor(129, 114, 179),
    RGBColor(100, 100, 100),
];

/// The requests whose p99 the first panel draws.
const MAIN: [&str; 5] = [
    "GET /v1/sessions/current",
    "POST /v1/tasks/claim",
    "GET /v1/tasks/stats",
    "GET /v1/tasks",
    "POST /v1/sessions",
];

pub fn draw(soak: &SoakResult, timeline: &Timeline, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    let end = timeline
        .windows
        .last()
        .map_or(1.0, |w| (w.start_secs + timeline.window_secs) as f64);
    let window = timeline.window_secs;
    let p99_series: Vec<(String, Vec<(f64, f64)>)> = MAIN
        .iter()
        .map(|name| {
            let points = timeline
                .windows
                .iter()
                .map(|w| {
                    let f = timeline.span(Some(name), w.start_secs, w.start_secs + window);
                    (w.start_secs as f64, f64::from(f.p99_ms))
                })
                .collect();
            ((*name).to_owned(), points)
        })
        .collect();
    lines(&panels[0], "p99 per 5 s window (ms)", end, &p99_series)?;
    let rps: Vec<(f64, f64)> = timeline
        .throughput()
        .into_iter()
        .map(|(t, r)| (t as f64, r))
        .collect();
    lines(
        &panels[1],
        "Throughput (req/s)",
        end,
        &[("all requests".into(), rps)],
    )?;
    let points = &soak.points;
    let of = |f: fn(&super::soak::Point) -> f64| -> Vec<(f64, f64)> {
        points.iter().map(|p| (p.t_secs, f(p))).collect()
    };
    lines(
        &panels[2],
        "Pool and hash queue (per 5 s sample)",
        end,
        &[
            ("checkouts waiting now".into(), of(|p| p.pool_waiting)),
            ("checkouts that waited".into(), of(|p| p.waited)),
            ("hash queue depth".into(), of(|p| p.hash_queue)),
        ],
    )?;
    let mut memory = vec![("server RSS".to_owned(), of(|p| p.rss_mib))];
    for table in ["tasks", "sessions"] {
        let sizes: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|p| {
                p.sizes
                    .iter()
                    .find(|(t, _, _)| t == table)
                    .map(|(_, heap, index)| (p.t_secs, heap + index))
            })
            .collect();
        memory.push((format!("{table} (heap + indexes)"), sizes));
    }
    lines(&panels[3], "Memory and tables (MiB)", end, &memory)?;
    root.present()?;
    Ok(())
}

fn lines(
    area: &Area<'_>,
    caption: &str,
    end: f64,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let top = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..end, 0.0..top * 1.1)?;
    chart.configure_mesh().x_desc("s since start").draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    Ok(())
}
