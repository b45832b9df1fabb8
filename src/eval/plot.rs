//! PNG plots for run reports, drawn with `plotters` into an RGB buffer and encoded with `image`.
//! Text uses DejaVu Sans (a subset compiled in from `assets/fonts/`), so no system font library
//! is needed.

use std::io::Cursor;
use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::metrics::AccuracyMatrix;
use super::report::{CodingRatePoint, RunReport};
use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");
static REGISTER: Once = Once::new();
const FAMILY: &str = "sans-serif";

fn register_font() {
    REGISTER.call_once(|| {
        // The embedded font is fixed at compile time and parses; a failure would leave text blank.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(
        path,
        std::io::Error::other(format!("cannot draw plot: {e}")),
    )
}

/// Renders `draw` on a white `w×h` canvas and returns PNG bytes.
fn render<F>(path: &Path, (w, h): (u32, u32), draw: F) -> Result<Vec<u8>>
where
    F: FnOnce(
        &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
{
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        draw(&root).map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| plot_err(path, "pixel buffer size mismatch"))?;
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| plot_err(path, e))?;
    Ok(out)
}

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// Near-white (0) to dark blue (1).
fn heat(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// Accuracy-matrix heat-map with the percentage written in each cell. The shade spans the
/// matrix's own range (lowest entry lightest), which the caption states.
pub(crate) fn accuracy_matrix_png(m: &AccuracyMatrix, path: &Path) -> Result<Vec<u8>> {
    let t = m.num_tasks() as i32;
    let vals: Vec<f64> = m.rows.iter().flatten().flatten().copied().collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let shade = move |v: f64| {
        if hi - lo < 1e-9 {
            0.8
        } else {
            0.15 + 0.85 * (v - lo) / (hi - lo)
        }
    };
    let side = (140 + 90 * t).clamp(480, 1400) as u32;
    render(path, (side + 60, side + 40), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Accuracy matrix A[i][j] (%), shade {:.1} – {:.1}",
                    100.0 * lo,
                    100.0 * hi
                ),
                font(22),
            )
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d((0..t - 1).into_segmented(), (0..t - 1).into_segmented())
            .map_err(|x| e(&x))?;
        let label = move |v: &SegmentValue<i32>, flip: bool| match v {
            SegmentValue::CenterOf(k) if flip => format!("{}", t - k),
            SegmentValue::CenterOf(k) => format!("{}", k + 1),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(t as usize)
            .y_labels(t as usize)
            .x_label_formatter(&|v| label(v, false))
            .y_label_formatter(&|v| label(v, true))
            .x_desc("evaluated on task j")
            .y_desc("after training task i")
            .axis_desc_style(font(20))
            .label_style(font(18))
            .draw()
            .map_err(|x| e(&x))?;
        for i in 0..t {
            for j in 0..t {
                let y = t - 1 - i;
                let v = m.get(i as usize, j as usize);
                let fill = match v {
                    Some(a) => heat(shade(a)),
                    None => RGBColor(225, 225, 225),
                };
                let cell = [
                    (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                ];
                chart
                    .draw_series(std::iter::once(Rectangle::new(cell.clone(), fill.filled())))
                    .map_err(|x| e(&x))?;
                chart
                    .draw_series(std::iter::once(Rectangle::new(cell, WHITE.stroke_width(2))))
                    .map_err(|x| e(&x))?;
                let (text, color) = match v {
                    Some(a) => (
                        format!("{:.1}", 100.0 * a),
                        if shade(a) > 0.5 { WHITE } else { BLACK },
                    ),
                    None => ("–".to_string(), RGBColor(120, 120, 120)),
                };
                let size = if t <= 5 {
                    24
                } else if t <= 10 {
                    16
                } else {
                    11
                };
                let style = (FAMILY, size)
                    .into_font()
                    .color(&color)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (SegmentValue::CenterOf(j), SegmentValue::CenterOf(y)),
                        style,
                    )))
                    .map_err(|x| e(&x))?;
            }
        }
        Ok(())
    })
}

const C_LA: RGBColor = RGBColor(31, 119, 180);
const C_AWARE: RGBColor = RGBColor(44, 160, 44);
const C_KNN: RGBColor = RGBColor(148, 103, 189);
const C_FORGET: RGBColor = RGBColor(214, 39, 40);
const C_EARLY: RGBColor = RGBColor(255, 127, 14);
const C_RETAIN: RGBColor = RGBColor(140, 86, 75);

/// LA, task-aware accuracy, kNN accuracy, forgetting and the retention probe (all %) after each
/// task, with the retention of the initial encoder as a thin horizontal line; the legend, with
/// each series' last value, sits in a panel right of the chart so it never hides a point.
pub(crate) fn per_task_png(r: &RunReport, path: &Path) -> Result<Vec<u8>> {
    let t = r.tasks.iter().map(|x| x.task).max().unwrap_or(0) as i32 + 1;
    type Get = fn(&super::report::TaskRow) -> Option<f64>;
    let series: [(&str, RGBColor, Get); 5] = [
        ("LA (task-agnostic)", C_LA, |x| x.la),
        ("task-aware", C_AWARE, |x| x.task_aware),
        ("kNN", C_KNN, |x| x.knn),
        ("forgetting", C_FORGET, |x| x.forgetting),
        ("retention probe", C_RETAIN, |x| x.retention),
    ];
    let retention_start = r.init.as_ref().and_then(|i| i.retention);
    render(path, (1000, 560), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let root = root
            .margin(12, 0, 0, 0)
            .titled("Accuracy and forgetting after each task", font(26))
            .map_err(|x| e(&x))?;
        let (left, legend) = root.split_horizontally(790);
        let mut chart = ChartBuilder::on(&left)
            .margin(15)
            .x_label_area_size(55)
            .y_label_area_size(65)
            .build_cartesian_2d((0..t - 1).into_segmented(), 0f64..100f64)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_labels(t as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) => format!("{}", k + 1),
                _ => String::new(),
            })
            .y_labels(11)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc("after training task")
            .y_desc("%")
            .axis_desc_style(font(20))
            .label_style(font(18))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(|x| e(&x))?;
        let mut shown = Vec::new();
        if let Some(v) = retention_start {
            let y = 100.0 * v;
            chart
                .draw_series(LineSeries::new(
                    vec![(SegmentValue::Exact(0), y), (SegmentValue::Exact(t), y)],
                    C_RETAIN.stroke_width(1),
                ))
                .map_err(|x| e(&x))?;
            shown.push(("retention at start", C_RETAIN, y));
        }
        for (name, color, get) in series {
            let pts: Vec<(SegmentValue<i32>, f64)> = r
                .tasks
                .iter()
                .filter_map(|row| {
                    get(row).map(|v| (SegmentValue::CenterOf(row.task as i32), 100.0 * v))
                })
                .collect();
            let Some(last) = pts.last() else {
                continue;
            };
            shown.push((name, color, last.1));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
                .map_err(|x| e(&x))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new(p.clone(), 5, color.filled())),
                )
                .map_err(|x| e(&x))?;
        }
        // Legend with each series' value after the last task (the per-task values are in
        // report.md).
        for (k, (name, color, last)) in shown.iter().enumerate() {
            let y = 60 + 52 * k as i32;
            legend
                .draw(&PathElement::new(
                    vec![(10, y), (40, y)],
                    color.stroke_width(3),
                ))
                .map_err(|x| e(&x))?;
            legend
                .draw(&Circle::new((25, y), 5, color.filled()))
                .map_err(|x| e(&x))?;
            legend
                .draw(&Text::new(
                    name.to_string(),
                    (50, y),
                    font(17).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(|x| e(&x))?;
            legend
                .draw(&Text::new(
                    format!("last: {last:.1} %"),
                    (50, y + 20),
                    (FAMILY, 15)
                        .into_font()
                        .color(&RGBColor(90, 90, 90))
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(|x| e(&x))?;
        }
        Ok(())
    })
}

fn padded_range(vals: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let pad = ((hi - lo) * 0.1).max(hi.abs().max(1.0) * 0.02);
    (lo - pad)..(hi + pad)
}

/// ΔR of the early layer (right axis) and the last layer (left axis) at the end of each epoch,
/// epochs counted across tasks, with task boundaries marked.
pub(crate) fn coding_rate_png(points: &[CodingRatePoint], path: &Path) -> Result<Vec<u8>> {
    let n = points.len();
    render(path, (900, 560), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let x_range = 0.5f64..(n as f64 + 0.5);
        let mut chart = ChartBuilder::on(root)
            .caption("Coding-rate reduction ΔR per epoch", font(26))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(75)
            .right_y_label_area_size(75)
            .build_cartesian_2d(x_range.clone(), padded_range(points.iter().map(|p| p.last)))
            .map_err(|x| e(&x))?
            .set_secondary_coord(x_range, padded_range(points.iter().map(|p| p.early)));
        chart
            .configure_mesh()
            .x_desc("epoch (counted across tasks)")
            .y_desc("last-layer ΔR (nats)")
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-9 {
                    format!("{}", x.round() as i64)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| format!("{y:.2}"))
            .axis_desc_style(font(20))
            .label_style(font(17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .configure_secondary_axes()
            .y_desc("early-layer ΔR (nats)")
            .y_label_formatter(&|y| format!("{y:.2}"))
            .axis_desc_style(font(20))
            .label_style(font(17))
            .draw()
            .map_err(|x| e(&x))?;
        // Task boundaries: a grey line before the first epoch of each task after the first.
        let y_range = padded_range(points.iter().map(|p| p.last));
        for (k, w) in points.windows(2).enumerate() {
            if w[1].task != w[0].task {
                let x = k as f64 + 1.5;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, y_range.start), (x, y_range.end)],
                        RGBColor(150, 150, 150).stroke_width(2),
                    )))
                    .map_err(|x| e(&x))?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("task {}", w[1].task + 1),
                        (x, y_range.end),
                        (FAMILY, 15)
                            .into_font()
                            .color(&RGBColor(100, 100, 100))
                            .pos(Pos::new(HPos::Left, VPos::Top)),
                    )))
                    .map_err(|x| e(&x))?;
            }
        }
        let last: Vec<(f64, f64)> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64 + 1.0, p.last))
            .collect();
        let early: Vec<(f64, f64)> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64 + 1.0, p.early))
            .collect();
        chart
            .draw_series(LineSeries::new(last.clone(), C_LA.stroke_width(3)))
            .map_err(|x| e(&x))?
            .label("last layer (left axis)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], C_LA.stroke_width(3)));
        chart
            .draw_series(last.iter().map(|&p| Circle::new(p, 4, C_LA.filled())))
            .map_err(|x| e(&x))?;
        chart
            .draw_secondary_series(LineSeries::new(early.clone(), C_EARLY.stroke_width(3)))
            .map_err(|x| e(&x))?
            .label("early layer (right axis)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], C_EARLY.stroke_width(3)));
        chart
            .draw_secondary_series(early.iter().map(|&p| Circle::new(p, 4, C_EARLY.filled())))
            .map_err(|x| e(&x))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(font(17))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|x| e(&x))?;
        Ok(())
    })
}
