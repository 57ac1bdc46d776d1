//! The charts: `chart.png`, each program's median time under each allocator relative to glibc
//! (1.0) as grouped bars on a logarithmic axis; `memory.png`, resident memory over time. Text
//! is drawn with DejaVu Sans, read from Debian's `fonts-dejavu-core` package.

use crate::report::Results;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use tcalloc_bench::ALLOCATORS;

/// One colour per allocator, in the order of `ALLOCATORS`.
pub const COLORS: [RGBColor; 4] =
    [RGBColor(200, 40, 40), RGBColor(90, 90, 90), RGBColor(40, 110, 200), RGBColor(230, 150, 30)];

const FONT_PATHS: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];

pub fn load_font() -> Result<(), String> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("DejaVu Sans not found (apt-get install fonts-dejavu-core)")?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "unreadable font".to_string())
}

pub fn draw(results: &Results, path: &Path) -> Result<(), String> {
    load_font()?;
    let programs = results.program_names();
    let n = programs.len();
    let colors = COLORS;
    let ratio = |p: &str, a: &str| -> Option<f64> {
        Some(results.median(p, a)?.seconds / results.median(p, "glibc")?.seconds)
    };
    let values: Vec<f64> =
        programs.iter().flat_map(|p| ALLOCATORS.iter().filter_map(move |a| ratio(p, a))).collect();
    let low = values.iter().cloned().fold(1.0f64, f64::min).max(1e-3) / 1.5;
    let high = values.iter().cloned().fold(1.0f64, f64::max) * 1.5;
    // Horizontal bars, one group per program, so that the names read left to right.
    let height = 110 + n as u32 * 34;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("time relative to glibc malloc (shorter is faster)", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(150)
        .build_cartesian_2d((low..high).log_scale(), 0f64..n as f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = y.floor() as usize;
            if (y - i as f64 - 0.5).abs() < 1e-6 && i < n {
                programs[n - 1 - i].to_string()
            } else {
                String::new()
            }
        })
        .x_desc("time / glibc time (log scale)")
        .x_label_formatter(&|x| format!("{x:.2}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    let bar = 0.8 / ALLOCATORS.len() as f64;
    for (k, a) in ALLOCATORS.iter().enumerate() {
        let color = colors[k];
        let rects = programs.iter().enumerate().filter_map(|(i, p)| {
            let v = ratio(p, a)?;
            // Top to bottom in report order, tcalloc first within a group.
            let y1 = (n - 1 - i) as f64 + 0.9 - k as f64 * bar;
            Some(Rectangle::new([(low, y1 - bar * 0.9), (v, y1)], color.filled()))
        });
        chart
            .draw_series(rects)
            .map_err(|e| e.to_string())?
            .label(*a)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0.0), (1.0, n as f64)],
            BLACK.stroke_width(1),
        )))
        .map_err(|e| e.to_string())?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// `memory.png`: resident memory over time, one line per allocator.
pub fn draw_timelines(timelines: &[crate::report::Timeline], path: &Path) -> Result<(), String> {
    load_font()?;
    let colors = COLORS;
    let t_max = timelines.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(1.0, f64::max);
    let m_max = timelines.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("resident memory through phases of growth and shrinkage", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..t_max * 1.02, 0f64..m_max * 1.1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("resident MiB")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (k, (a, samples)) in timelines.iter().enumerate() {
        let color = colors[k % colors.len()];
        chart
            .draw_series(LineSeries::new(samples.iter().map(|s| (s.0, s.1)), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*a)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
